"""Reads a job or batch request body (JSON, multipart form, or JSONL) into plain fields and image bytes."""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from starlette.datastructures import FormData, UploadFile

from services.config import ServiceSettings
from services.errors import InputError
from services.input_checks import JOB_FIELDS, check_unknown_fields, decode_data_url

BATCH_FIELDS = ("task", "priority", "items")
BATCH_FORM_FIELDS = ("task", "priority", "file")


@dataclass
class RawJob:
    """One job's fields as sent, and a way to get its image bytes once the cheaper checks passed."""

    fields: dict[str, Any]
    image_bytes: Callable[[], bytes]


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def _check_request_size(request: Request, settings: ServiceSettings) -> None:
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > settings.max_request_bytes:
        raise InputError("body", f"request is {length} bytes, over the limit of {settings.max_request_bytes}", 413)


async def _json_object(request: Request, settings: ServiceSettings) -> dict[str, Any]:
    body = await request.body()
    if len(body) > settings.max_request_bytes:
        raise InputError("body", f"request is over the limit of {settings.max_request_bytes} bytes", 413)
    try:
        value = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError("body", f"body is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise InputError("body", "body must be a JSON object")
    return value


async def _form(request: Request, settings: ServiceSettings) -> FormData:
    try:
        return await request.form(max_files=2, max_fields=200, max_part_size=settings.max_request_bytes)
    except Exception as exc:  # malformed multipart: the client's fault, never a 5xx
        raise InputError("body", f"multipart body could not be parsed: {exc}") from None


def _labels_from_form(values: list[Any]) -> Any:
    if not values:
        return None
    if len(values) == 1 and isinstance(values[0], str) and values[0].lstrip().startswith("["):
        try:
            return json.loads(values[0])
        except json.JSONDecodeError as exc:
            raise InputError("labels", f"labels is not a valid JSON array: {exc}") from None
    return values


def _image_from_form_value(value: Any, settings: ServiceSettings) -> Callable[[], bytes]:
    if value is None:
        raise InputError("image", "image is required: a file part named 'image'")
    if isinstance(value, UploadFile):
        data = value.file.read(settings.max_image_bytes + 1)
        if len(data) > settings.max_image_bytes:
            raise InputError("image", f"image is over the limit of {settings.max_image_bytes} bytes", 413)
        return lambda: data
    return lambda: decode_data_url(value, settings)


async def read_job(request: Request, settings: ServiceSettings) -> RawJob:
    """A job from `application/json` (image as a data: URL) or `multipart/form-data` (image as a file)."""
    _check_request_size(request, settings)
    media_type = _media_type(request)
    if media_type == "application/json":
        fields = await _json_object(request, settings)
        check_unknown_fields(fields, JOB_FIELDS)
        if "image" not in fields:
            raise InputError("image", "image is required: a base64 data: URL")
        return RawJob(fields=fields, image_bytes=lambda: decode_data_url(fields["image"], settings))
    if media_type == "multipart/form-data":
        form = await _form(request, settings)
        check_unknown_fields(dict(form), JOB_FIELDS)
        fields = {name: form.get(name) for name in ("task", "question", "text", "priority", "ref")}
        fields["labels"] = _labels_from_form(form.getlist("labels"))
        return RawJob(fields=fields, image_bytes=_image_from_form_value(form.get("image"), settings))
    raise InputError("body", f"unsupported Content-Type {media_type or 'none'!r}: use application/json or "
                             "multipart/form-data", 415)


def _batch_item(item: Any, index: int, defaults: dict[str, Any], settings: ServiceSettings) -> RawJob:
    prefix = f"items[{index}]."
    if not isinstance(item, dict):
        raise InputError(f"items[{index}]", "each item must be a JSON object")
    check_unknown_fields(item, JOB_FIELDS, prefix)
    if "image" not in item:
        raise InputError(prefix + "image", "image is required: a base64 data: URL")
    fields = {**{k: v for k, v in defaults.items() if v is not None}, **{k: v for k, v in item.items() if v is not None}}
    return RawJob(fields=fields, image_bytes=lambda: decode_data_url(item["image"], settings, prefix + "image"))


def _batch_items(items: Any, defaults: dict[str, Any], settings: ServiceSettings) -> list[RawJob]:
    if not isinstance(items, list) or not items:
        raise InputError("items", "items must be a non-empty list")
    if len(items) > settings.max_batch_items:
        raise InputError("items", f"{len(items)} items, over the limit of {settings.max_batch_items} per batch", 413)
    return [_batch_item(item, i, defaults, settings) for i, item in enumerate(items)]


def _jsonl_items(upload: Any) -> list[Any]:
    if not isinstance(upload, UploadFile):
        raise InputError("file", "file is required: a JSONL part, one JSON object per line")
    items = []
    for number, line in enumerate(upload.file.read().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            items.append(json.loads(line))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InputError("file", f"line {number} is not valid JSON: {exc}") from None
    return items


async def read_batch(request: Request, settings: ServiceSettings) -> list[RawJob]:
    """A batch from JSON ({"task", "items": [...]}) or a multipart JSONL upload (`file`, plus `task`)."""
    _check_request_size(request, settings)
    media_type = _media_type(request)
    if media_type == "application/json":
        body = await _json_object(request, settings)
        check_unknown_fields(body, BATCH_FIELDS)
        defaults = {"task": body.get("task"), "priority": body.get("priority")}
        return _batch_items(body.get("items"), defaults, settings)
    if media_type == "multipart/form-data":
        form = await _form(request, settings)
        check_unknown_fields(dict(form), BATCH_FORM_FIELDS)
        defaults = {"task": form.get("task"), "priority": form.get("priority")}
        return _batch_items(_jsonl_items(form.get("file")), defaults, settings)
    raise InputError("body", f"unsupported Content-Type {media_type or 'none'!r}: use application/json or "
                             "multipart/form-data with a JSONL file", 415)
