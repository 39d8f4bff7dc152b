"""Reads the `input` of POST /v1/moderations: a string, a list of strings, or one list of text and image parts."""
from __future__ import annotations

from typing import Any

from services.chat_requests import image_url_bytes, image_url_of
from services.config import ServiceSettings
from services.errors import InputError
from services.input_checks import check_image
from services.moderation_scoring import ModerationItem, check_item_text


def _refuse(field: str, message: str) -> InputError:
    return InputError(field, message, 400)


def _text_item(value: str, field: str, settings: ServiceSettings) -> ModerationItem:
    return ModerationItem(text=check_item_text(value, field, settings), image=None)


def _parts_item(parts: list[Any], settings: ServiceSettings, allow_image_urls: bool) -> ModerationItem:
    """A list of parts is one input (a post): its texts joined, and at most one image."""
    texts, image = [], None
    for index, part in enumerate(parts):
        field = f"input[{index}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind == "image_url":
            if image is not None:
                raise _refuse(field, "one image per input; send each image as its own request")
            url_field = field + ".image_url.url"
            data = image_url_bytes(image_url_of(part, field), url_field, settings, allow_image_urls=allow_image_urls)
            image = check_image(data, settings, url_field)
        else:
            raise _refuse(field, 'each part must be {"type": "text", "text": ...} or '
                                 '{"type": "image_url", "image_url": {"url": ...}}')
    text = "\n".join(texts) if texts else None
    return ModerationItem(text=check_item_text(text, "input", settings), image=image)


def read_moderation_input(value: Any, settings: ServiceSettings, *, allow_image_urls: bool) -> list[ModerationItem]:
    """The items to judge, each checked like a job's image and text; blocking (decodes images): run it in a thread."""
    if isinstance(value, str):
        return [_text_item(value, "input", settings)]
    if not isinstance(value, list) or not value:
        raise _refuse("input", "input must be a string, a non-empty list of strings, or a list of text and "
                               "image_url parts")
    if all(isinstance(v, str) for v in value):
        if len(value) > settings.moderation_max_inputs:
            raise _refuse("input", f"{len(value)} inputs, over the limit of {settings.moderation_max_inputs}")
        return [_text_item(v, f"input[{i}]", settings) for i, v in enumerate(value)]
    if all(isinstance(v, dict) for v in value):
        return [_parts_item(value, settings, allow_image_urls)]
    raise _refuse("input", "input mixes strings and parts: send strings, or parts")
