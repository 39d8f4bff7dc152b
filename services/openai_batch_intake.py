"""Reads an OpenAI batch input file (JSONL chat requests) into checked jobs, and one error per refused line."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from services.chat_requests import check_chat_job, read_chat_request
from services.config import ServiceSettings
from services.errors import InputError
from services.input_checks import CheckedJob

CHAT_URL = "/v1/chat/completions"
LINE_FIELDS = ("custom_id", "method", "url", "body")


@dataclass
class BatchIntake:
    """The valid lines as jobs (custom_id in ref), and a record per refused line for the error file."""

    jobs: list[CheckedJob] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)


def _line_object(raw: bytes) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # bad JSON or bad UTF-8
        raise InputError("line", f"not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise InputError("line", "each line must be a JSON object")
    return value


def _check_envelope(line: dict[str, Any], seen: set[str]) -> str:
    """The line's custom_id, once its method and url name a chat completion and the id is new in the file."""
    custom_id = line.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        raise InputError("custom_id", "custom_id must be a non-empty string")
    if custom_id in seen:
        raise InputError("custom_id", f"custom_id {custom_id!r} repeats an earlier line")
    if line.get("method") != "POST":
        raise InputError("method", "method must be POST")
    if line.get("url") != CHAT_URL:
        raise InputError("url", f"url must be {CHAT_URL}")
    unknown = sorted(set(line) - set(LINE_FIELDS))
    if unknown:
        raise InputError(unknown[0], f"unknown field {unknown[0]!r}; a line has {', '.join(LINE_FIELDS)}")
    return custom_id


def _check_line(line: dict[str, Any], custom_id: str, settings: ServiceSettings) -> CheckedJob:
    chat = read_chat_request(line.get("body"), prefix="body.")
    if chat.stream:
        raise InputError("body.stream", "a batch request cannot stream")
    if not chat.image_url.startswith("data:"):  # as in /v1/batches: a fetch per line would hold the API for minutes
        raise InputError(chat.image_field, "a batch line's image must be a data: URL (image URLs are fetched by "
                                           "POST /v1/chat/completions only)")
    return check_chat_job(chat, settings, allow_image_urls=False, ref=custom_id, ref_field="custom_id")


def _error_record(number: int, custom_id: Any, exc: InputError) -> dict[str, Any]:
    return {"line": number, "custom_id": custom_id if isinstance(custom_id, str) else None,
            "code": "invalid_request", "param": exc.field, "message": exc.message, "status_code": exc.status}


def read_batch_input(data: bytes, settings: ServiceSettings) -> BatchIntake:
    """Every non-blank line checked like a chat request; blocking (decodes images): run it in a thread."""
    lines = [(number, raw) for number, raw in enumerate(data.splitlines(), start=1) if raw.strip()]
    if not lines:
        raise InputError("input_file_id", "the input file has no requests", 400)
    if len(lines) > settings.max_batch_items:
        raise InputError("input_file_id", f"the input file has {len(lines)} requests, over the limit of "
                         f"{settings.max_batch_items} per batch", 400)
    intake, seen = BatchIntake(), set()
    for number, raw in lines:
        line: dict[str, Any] = {}
        try:
            line = _line_object(raw)
            custom_id = _check_envelope(line, seen)
            seen.add(custom_id)  # taken even if the rest of the line is refused: one custom_id, one answer line
            intake.jobs.append(_check_line(line, custom_id, settings))
        except InputError as exc:
            intake.errors.append(_error_record(number, line.get("custom_id"), exc))
    return intake
