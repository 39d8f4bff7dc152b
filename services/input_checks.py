"""Checks a submitted job before anything is stored: the image (Pillow only), the task and its text fields."""
from __future__ import annotations

import base64
import binascii
import hashlib
import io
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from PIL import Image, UnidentifiedImageError

from db.models import Task
from db.queries import ImageFacts
from services.config import ALLOWED_IMAGE_FORMATS, ServiceSettings
from services.errors import InputError

# A decompression bomb is an error here, never a warning that lets the decode go on.
warnings.simplefilter("error", Image.DecompressionBombWarning)

FORMAT_ALIASES = {"MPO": "JPEG"}  # a camera JPEG carrying extra pictures is still a JPEG
TASK_PARAMS = {"caption": (), "vqa": ("question",), "sentiment": ("text",), "classify": ("labels",)}
JOB_FIELDS = ("task", "image", "question", "text", "labels", "priority", "ref")


@dataclass(frozen=True)
class CheckedJob:
    """A job that passed every check: what the ledger stores."""

    task: str
    params: dict[str, Any]
    image: ImageFacts
    priority: int
    ref: str | None


# --- the image ----------------------------------------------------------------------------------

def _looks_like_svg(data: bytes) -> bool:
    head = data[:1024].lstrip().lower()
    return head.startswith(b"<svg") or (head.startswith(b"<?xml") and b"<svg" in data[:4096].lower())


def _open_image(data: bytes, field: str) -> Image.Image:
    try:
        return Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise InputError(field, "not an image: the bytes match no known image format") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InputError(field, f"image rejected as a decompression bomb: {exc}") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise InputError(field, f"image header could not be read: {exc}") from None


def _decode_fully(image: Image.Image, field: str) -> None:
    try:
        image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InputError(field, f"image rejected as a decompression bomb: {exc}") from None
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as exc:
        raise InputError(field, f"image could not be decoded (truncated or corrupt?): {exc}") from None


def check_image(data: bytes, settings: ServiceSettings, field: str = "image") -> ImageFacts:
    """The image's facts if the bytes are an allowed, bounded, fully decodable raster image; else InputError."""
    if not data:
        raise InputError(field, "image is empty (0 bytes)")
    if len(data) > settings.max_image_bytes:
        raise InputError(field, f"image is {len(data)} bytes, over the limit of {settings.max_image_bytes}", 413)
    if _looks_like_svg(data):
        raise InputError(field, f"SVG is not supported; send one of {', '.join(ALLOWED_IMAGE_FORMATS)}", 415)
    with _open_image(data, field) as image:
        image_format = FORMAT_ALIASES.get(image.format, image.format)
        if image_format not in ALLOWED_IMAGE_FORMATS:
            raise InputError(field, f"unsupported image format {image.format}; allowed: {', '.join(ALLOWED_IMAGE_FORMATS)}", 415)
        width, height = image.size
        if width * height > settings.max_image_pixels:
            raise InputError(field, f"image is {width}x{height} = {width * height} pixels, over the cap of "
                             f"{settings.max_image_pixels} (decompression bomb?)", 422)
        _decode_fully(image, field)
        return ImageFacts(data=data, sha256=hashlib.sha256(data).hexdigest(), format=image_format, width=width,
                          height=height)


def decode_data_url(value: Any, settings: ServiceSettings, field: str = "image") -> bytes:
    """The bytes of a base64 `data:` URL (its media type is ignored: the type is sniffed from the bytes)."""
    if not isinstance(value, str) or not value:
        raise InputError(field, "image must be a base64 data: URL string, e.g. data:image/png;base64,iVBORw0...")
    if not value.startswith("data:") or "," not in value:
        raise InputError(field, "image must be a data: URL, e.g. data:image/png;base64,iVBORw0...")
    header, payload = value.split(",", 1)
    if not header.endswith(";base64"):
        raise InputError(field, "image data: URL must be base64-encoded (data:<type>;base64,<data>)")
    payload = "".join(payload.split())
    if len(payload) * 3 // 4 > settings.max_image_bytes + 3:
        raise InputError(field, f"image is over the limit of {settings.max_image_bytes} bytes", 413)
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InputError(field, f"image is not valid base64: {exc}") from None


# --- the task and its fields ------------------------------------------------------------------------

def check_task(value: Any, field: str = "task") -> str:
    """The task name, if it is one LensQ runs."""
    if value is None or value == "":
        raise InputError(field, f"task is required: one of {', '.join(t.value for t in Task)}")
    if not isinstance(value, str) or value not in TASK_PARAMS:
        raise InputError(field, f"unknown task {value!r}; one of {', '.join(t.value for t in Task)}")
    return value


def _check_text(value: Any, field: str, limit: int, *, required: bool) -> str:
    if value is None and not required:
        return ""
    if value is None:
        raise InputError(field, f"{field.rsplit('.', 1)[-1]} is required")
    if not isinstance(value, str):
        raise InputError(field, f"{field} must be a string")
    if required and not value.strip():
        raise InputError(field, f"{field} must not be empty")
    if len(value) > limit:
        raise InputError(field, f"{field} is {len(value)} characters, over the limit of {limit}")
    return value


def check_labels(value: Any, settings: ServiceSettings, field: str = "labels") -> list[str]:
    """A list of distinct, non-empty labels, between the minimum and maximum count."""
    if value is None:
        raise InputError(field, f"classify needs labels: a list of {settings.min_labels} to {settings.max_labels} strings")
    if not isinstance(value, list):
        raise InputError(field, "labels must be a list of strings")
    if not settings.min_labels <= len(value) <= settings.max_labels:
        raise InputError(field, f"labels has {len(value)} items; give {settings.min_labels} to {settings.max_labels}")
    seen: dict[str, int] = {}
    for i, label in enumerate(value):
        label = _check_text(label, f"{field}[{i}]", settings.max_label_chars, required=True).strip()
        if label in seen:
            raise InputError(f"{field}[{i}]", f"label {label!r} repeats {field}[{seen[label]}]")
        seen[label] = i
    return list(seen)


def check_params(task: str, raw: dict[str, Any], settings: ServiceSettings, prefix: str = "") -> dict[str, Any]:
    """The task's parameters: VQA needs a question, classify labels, sentiment takes a text, caption none."""
    for name in ("question", "text", "labels"):
        if raw.get(name) is not None and name not in TASK_PARAMS[task]:
            raise InputError(prefix + name, f"{name} is not used by task {task}")
    if task == "vqa" and raw.get("question") is None:
        raise InputError(prefix + "question", "vqa needs a question")
    if task == "vqa":
        return {"question": _check_text(raw.get("question"), prefix + "question", settings.max_question_chars, required=True)}
    if task == "sentiment":
        return {"text": _check_text(raw.get("text"), prefix + "text", settings.max_text_chars, required=False)}
    if task == "classify":
        return {"labels": check_labels(raw.get("labels"), settings, prefix + "labels")}
    return {}


def check_priority(value: Any, settings: ServiceSettings, field: str = "priority") -> int:
    """An integer priority within the allowed range (higher runs first)."""
    if value is None:
        return 0
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputError(field, "priority must be an integer")
    if not settings.min_priority <= value <= settings.max_priority:
        raise InputError(field, f"priority must be between {settings.min_priority} and {settings.max_priority}")
    return value


def check_ref(value: Any, settings: ServiceSettings, field: str = "ref") -> str | None:
    """An optional client reference (a file name, a post id) echoed back with the result."""
    if value is None:
        return None
    return _check_text(value, field, settings.max_ref_chars, required=False) or None


def check_unknown_fields(raw: dict[str, Any], allowed: tuple[str, ...], prefix: str = "") -> None:
    """Refuses fields LensQ does not know, so a typo is not silently ignored."""
    for name in raw:
        if name not in allowed:
            raise InputError(prefix + str(name), f"unknown field {name!r}; allowed: {', '.join(allowed)}")


def check_job(raw: dict[str, Any], image_bytes: Callable[[], bytes], settings: ServiceSettings,
              prefix: str = "") -> CheckedJob:
    """Every check of one job: the cheap fields first, then the image's bytes (decoded only then)."""
    task = check_task(raw.get("task"), prefix + "task")
    params = check_params(task, raw, settings, prefix)
    priority = check_priority(raw.get("priority"), settings, prefix + "priority")
    ref = check_ref(raw.get("ref"), settings, prefix + "ref")
    image = check_image(image_bytes(), settings, prefix + "image")
    return CheckedJob(task=task, params=params, image=image, priority=priority, ref=ref)
