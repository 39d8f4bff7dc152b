"""Reads a job or batch request body (JSON, multipart form, or JSONL) into plain fields and image bytes."""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException

from services.config import ServiceSettings
from services.errors import InputError
from services.image_urls import image_from_url
from services.input_checks import JOB_FIELDS, check_unknown_fields, decode_data_url

BATCH_FIELDS = ("task", "priority", "items", "callback_url", "model")
BATCH_FORM_FIELDS = ("task", "priority", "file", "callback_url", "model")
# A job of its own may name a callback; a batch's items may not (the batch has one, for its end).
SINGLE_JOB_FIELDS = (*JOB_FIELDS, "callback_url")


@dataclass
class RawJob:
    """One job's fields as sent, and a way to get its image bytes once the cheaper checks passed."""

    fields: dict[str, Any]
    image_bytes: Callable[[], bytes]


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def _parse_json(text: str | bytes, field: str, what: str) -> Any:
    try:
        return json.loads(text)
    except RecursionError:
        raise InputError(field, f"{what} is nested too deeply") from None
    except ValueError as exc:  # bad JSON, bad UTF-8, or an integer of thousands of digits
        raise InputError(field, f"{what} is not valid JSON: {exc}") from None


async def _json_object(request: Request) -> dict[str, Any]:
    # The body's size was capped by BodyLimitMiddleware before this reads it. A route that serves two shapes of
    # body may have parsed it already (remember_json_body): a 1,000-image batch is not parsed twice.
    value = getattr(request.state, "json_body", None)
    if value is None:
        value = _parse_json(await request.body(), "body", "body")
    if not isinstance(value, dict):
        raise InputError("body", "body must be a JSON object")
    return value


def remember_json_body(request: Request, value: Any) -> None:
    """Keeps a body already parsed for the route that reads it next (_json_object)."""
    request.state.json_body = value


def _is_form_limit(detail: str) -> bool:
    return "Too many" in detail or "exceeded maximum size" in detail


async def _form(request: Request, settings: ServiceSettings) -> FormData:
    try:
        return await request.form(max_files=settings.max_form_files, max_fields=settings.max_form_fields,
                                  max_part_size=settings.max_form_field_bytes)
    except InputError:
        raise  # the body cap, met while the form was read
    except HTTPException as exc:  # Starlette's answer to a multipart limit or malformed multipart: always a 400
        status = 413 if _is_form_limit(str(exc.detail)) else 422
        raise InputError("body", f"multipart body refused: {exc.detail}", status) from None
    except Exception as exc:  # malformed multipart: the client's fault, never a 5xx
        raise InputError("body", f"multipart body could not be parsed: {exc}") from None


def _labels_from_form(values: list[Any]) -> Any:
    if not values:
        return None
    if len(values) == 1 and isinstance(values[0], str) and values[0].lstrip().startswith("["):
        return _parse_json(values[0], "labels", "labels")
    return values


def _uploaded_image(upload: UploadFile, settings: ServiceSettings) -> Callable[[], bytes]:
    data = upload.file.read(settings.max_image_bytes + 1)
    if len(data) > settings.max_image_bytes:
        raise InputError("image", f"image is over the limit of {settings.max_image_bytes} bytes", 413)
    return lambda: data


def _image_source(image: Any, image_url: Any, allow_image_urls: bool, settings: ServiceSettings) -> Callable[[], bytes]:
    """How to get the job's image once its cheaper fields passed: a file part, a data: URL, or a fetched URL."""
    if image is not None and image_url is not None:
        raise InputError("image_url", "send image or image_url, not both")
    if image_url is not None:
        return lambda: image_from_url(image_url, allow_image_urls, settings)
    if image is None:
        raise InputError("image", "image is required: a file part or a base64 data: URL")
    if isinstance(image, UploadFile):
        return _uploaded_image(image, settings)
    return lambda: decode_data_url(image, settings)


async def read_job(request: Request, settings: ServiceSettings, *, allow_image_urls: bool = False) -> RawJob:
    """A job from `application/json` (image as a data: URL) or `multipart/form-data` (image as a file)."""
    media_type = _media_type(request)
    if media_type == "application/json":
        fields = await _json_object(request)
        check_unknown_fields(fields, SINGLE_JOB_FIELDS)
        return RawJob(fields=fields,
                      image_bytes=_image_source(fields.get("image"), fields.get("image_url"), allow_image_urls, settings))
    if media_type == "multipart/form-data":
        form = await _form(request, settings)
        check_unknown_fields(dict(form), SINGLE_JOB_FIELDS)
        fields = {name: form.get(name)
                  for name in ("task", "question", "text", "priority", "ref", "image_url", "callback_url", "model")}
        fields["labels"] = _labels_from_form(form.getlist("labels"))
        return RawJob(fields=fields,
                      image_bytes=_image_source(form.get("image"), form.get("image_url"), allow_image_urls, settings))
    raise InputError("body", f"unsupported Content-Type {media_type or 'none'!r}: use application/json or "
                             "multipart/form-data", 415)


def _batch_item(item: Any, index: int, defaults: dict[str, Any], settings: ServiceSettings) -> RawJob:
    prefix = f"items[{index}]."
    if not isinstance(item, dict):
        raise InputError(f"items[{index}]", "each item must be a JSON object")
    check_unknown_fields(item, JOB_FIELDS, prefix)
    if "image_url" in item:  # one fetch per item would let a batch hold the API for minutes
        raise InputError(prefix + "image_url", "image_url is accepted by POST /v1/jobs only; send the image itself")
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
        items.append(_parse_json(line, "file", f"line {number}"))
    return items


@dataclass
class RawBatch:
    """A batch's items as sent, and the batch's own callback URL (unchecked)."""

    items: list[RawJob]
    callback_url: Any = None


async def read_batch(request: Request, settings: ServiceSettings) -> list[RawJob]:
    """A batch's items from JSON ({"task", "items": [...]}) or a multipart JSONL upload (`file`, plus `task`)."""
    return (await read_batch_request(request, settings)).items


async def read_batch_request(request: Request, settings: ServiceSettings) -> RawBatch:
    """A batch from JSON ({"task", "items": [...], "callback_url"}) or a multipart JSONL upload (`file`, ...)."""
    media_type = _media_type(request)
    if media_type == "application/json":
        body = await _json_object(request)
        check_unknown_fields(body, BATCH_FIELDS)
        defaults = {"task": body.get("task"), "priority": body.get("priority"), "model": body.get("model")}
        return RawBatch(_batch_items(body.get("items"), defaults, settings), body.get("callback_url"))
    if media_type == "multipart/form-data":
        form = await _form(request, settings)
        check_unknown_fields(dict(form), BATCH_FORM_FIELDS)
        defaults = {"task": form.get("task"), "priority": form.get("priority"), "model": form.get("model")}
        return RawBatch(_batch_items(_jsonl_items(form.get("file")), defaults, settings), form.get("callback_url"))
    raise InputError("body", f"unsupported Content-Type {media_type or 'none'!r}: use application/json or "
                             "multipart/form-data with a JSONL file", 415)
