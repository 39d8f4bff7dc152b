"""Reads an OpenAI chat.completions request into one LensQ job: an image plus a question (vqa) or none (caption)."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from services.config import ServiceSettings
from services.errors import InputError
from services.image_urls import image_from_url
from services.input_checks import CheckedJob, check_image, check_params, check_ref, decode_data_url
from services.model_names import chat_model_name

ROLES = ("system", "developer", "user", "assistant", "tool")
# The model answers neither sampled nor multiple choices: only what greedy decoding gives is honest.
GREEDY_TEMPERATURES = (0, 0.0)
# A request that asks to describe or caption the image is a caption job, whatever else it says.
CAPTION_INSTRUCTION = re.compile(r"\b(describe|description|caption|captions)\b", re.IGNORECASE)


def _refuse(field: str, message: str) -> InputError:
    return InputError(field, message, 400)  # OpenAI clients expect 400 for a malformed request


@dataclass(frozen=True)
class ChatRequest:
    """What LensQ takes from a chat request: the task, the question, the image's URL and where each was sent."""

    task: str
    question: str | None
    image_url: str
    image_field: str
    text_field: str
    model: str | None
    stream: bool
    model_field: str = "model"


def _check_options(body: dict[str, Any], prefix: str) -> None:
    """The sampling options LensQ can honour: temperature 0 (greedy), one choice, a positive token cap."""
    temperature = body.get("temperature")
    if temperature is not None and (isinstance(temperature, bool) or temperature not in GREEDY_TEMPERATURES):
        raise _refuse(prefix + "temperature", "only temperature 0 (greedy decoding) is supported; omit it or send 0")
    n = body.get("n")
    if n is not None and (isinstance(n, bool) or n != 1):
        raise _refuse(prefix + "n", "only n=1 is supported: the model gives one greedy answer")
    for name in ("max_tokens", "max_completion_tokens"):
        value = body.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise _refuse(prefix + name, f"{name} must be a positive integer")
    if body.get("model") is not None and not isinstance(body.get("model"), str):
        raise _refuse(prefix + "model", "model must be a string")
    if body.get("stream") is not None and not isinstance(body.get("stream"), bool):
        raise _refuse(prefix + "stream", "stream must be true or false")


def _parts(message: Any, field: str) -> list[dict[str, Any]]:
    """A message's content as a list of parts (a plain string is one text part)."""
    if not isinstance(message, dict):
        raise _refuse(field, "each message must be an object with a role and a content")
    if message.get("role") not in ROLES:
        raise _refuse(field + ".role", f"role must be one of {', '.join(ROLES)}")
    content = message.get("content")
    if content is None or isinstance(content, str):
        return [{"type": "text", "text": content or ""}]
    if not isinstance(content, list):
        raise _refuse(field + ".content", "content must be a string or a list of parts")
    return content


def image_url_of(part: dict[str, Any], field: str) -> str:
    """The URL of an `image_url` content part (OpenAI sends an object, some clients a bare string)."""
    value = part.get("image_url")
    url = value.get("url") if isinstance(value, dict) else value
    if not isinstance(url, str) or not url:
        raise _refuse(field + ".image_url.url", "image_url.url must be a data: URL or an http(s) URL")
    return url


def _read_user_message(parts: list[Any], field: str) -> tuple[str, tuple[str, str] | None]:
    """The message's text (its text parts joined) and its one image as (url, field), if it has one."""
    texts, images = [], []
    for j, part in enumerate(parts):
        where = f"{field}.content[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            if not isinstance(part.get("text"), str):
                raise _refuse(where + ".text", "a text part needs a string `text`")
            texts.append(part["text"])
        elif kind == "image_url":
            images.append((image_url_of(part, where), where + ".image_url.url"))
        else:
            raise _refuse(where + ".type", "each part must be of type text or image_url")
    if len(images) > 1:
        raise _refuse(images[1][1], "LensQ reads one image per message; send one image_url part")
    return "\n".join(t for t in texts if t.strip()), images[0] if images else None


def _last_user_message(messages: list[Any], prefix: str) -> int:
    for index in range(len(messages) - 1, -1, -1):
        if isinstance(messages[index], dict) and messages[index].get("role") == "user":
            return index
    raise _refuse(prefix + "messages", "messages need at least one message with role user")


def _question_and_image(messages: list[Any], prefix: str) -> tuple[str, str, tuple[str, str]]:
    """The last user message's text, and the newest image of the user messages up to it (a follow-up question
    about an earlier image keeps that image)."""
    last = _last_user_message(messages, prefix)
    text_field = f"{prefix}messages[{last}]"
    text, image = _read_user_message(_parts(messages[last], text_field), text_field)
    for index in range(last - 1, -1, -1):
        if image is not None:
            break
        field = f"{prefix}messages[{index}]"
        parts = _parts(messages[index], field)
        if messages[index].get("role") == "user":
            image = _read_user_message(parts, field)[1]
    if image is None:
        raise _refuse(text_field + ".content", "LensQ answers about an image: add an image_url part")
    return text, text_field + ".content", image


def read_chat_request(body: Any, prefix: str = "") -> ChatRequest:
    """The job a chat request asks for; every field it cannot honour is refused with a 400 naming it."""
    if not isinstance(body, dict):
        raise _refuse(prefix.rstrip(".") or "body", "the request must be a JSON object")
    _check_options(body, prefix)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _refuse(prefix + "messages", "messages must be a non-empty list")
    text, text_field, (url, image_field) = _question_and_image(messages, prefix)
    # System and assistant turns are read for the image only: the model has no chat template to give them to.
    caption = not text.strip() or CAPTION_INSTRUCTION.search(text) is not None
    return ChatRequest(task="caption" if caption else "vqa", question=None if caption else text.strip(),
                       image_url=url, image_field=image_field, text_field=text_field, model=body.get("model"),
                       stream=bool(body.get("stream")), model_field=prefix + "model")


def image_url_bytes(url: str, field: str, settings: ServiceSettings, *, allow_image_urls: bool) -> bytes:
    """The bytes of an OpenAI image_url: a data: URL, or an http(s) URL through the guarded fetcher."""
    if url.startswith("data:"):
        return decode_data_url(url, settings, field)
    try:  # off unless the tenant enabled image URLs; never reaches a private address
        return image_from_url(url, allow_image_urls, settings)
    except InputError as exc:
        raise InputError(field, exc.message, exc.status, exc.headers) from None


def check_chat_job(chat: ChatRequest, settings: ServiceSettings, *, allow_image_urls: bool,
                   ref: str | None = None, ref_field: str = "custom_id") -> CheckedJob:
    """The checked job (same image and text checks as POST /v1/jobs); blocking: run it in a thread."""
    params: dict[str, Any] = {}
    if chat.task == "vqa":
        try:
            params = check_params("vqa", {"question": chat.question}, settings)
        except InputError as exc:
            raise InputError(chat.text_field, exc.message, exc.status) from None
    checked_ref = check_ref(ref, settings, ref_field)
    data = image_url_bytes(chat.image_url, chat.image_field, settings, allow_image_urls=allow_image_urls)
    image = check_image(data, settings, chat.image_field)
    return CheckedJob(task=chat.task, params=params, image=image, priority=0, ref=checked_ref,
                      model=chat_model_name(chat.model, settings), model_field=chat.model_field)
