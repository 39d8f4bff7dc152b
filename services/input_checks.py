"""Checks a submitted job before anything is stored: the image (Pillow only), the task and its text fields."""
from __future__ import annotations

import base64
import binascii
import io
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from PIL import Image, UnidentifiedImageError

from db.models import Task
from db.queries import ImageFacts
from services.canonical_image import canonical_copy, plain_jpeg_bytes, plain_png_copy, stored_facts
from services.config import ALLOWED_IMAGE_FORMATS, ServiceSettings
from services.errors import InputError
from services.model_names import check_model_name

# Types clients send that no decoder here is ever asked to parse; named so the client learns why (415).
UNSUPPORTED_SIGNATURES = (
    (b"%PDF-", "PDF"), (b"8BPS", "PSD"), (b"\x00\x00\x01\x00", "ICO"), (b"\x00\x00\x02\x00", "CUR"),
    (b"\x00\x00\x00\x0cjP  \r\n\x87\n", "JPEG 2000"), (b"\xffO\xffQ", "JPEG 2000"),
)
ISO_MEDIA_BRANDS = {b"heic": "HEIC", b"heix": "HEIC", b"mif1": "HEIF", b"avif": "AVIF"}
DATA_URL_TYPES = ("", "application/octet-stream")  # besides image/*: what a client may say it sends
TASK_PARAMS = {"caption": (), "vqa": ("question",), "sentiment": ("text",), "classify": ("labels",)}
JOB_FIELDS = ("task", "image", "image_url", "question", "text", "labels", "priority", "ref", "model")


@dataclass(frozen=True)
class CheckedJob:
    """A job that passed every check: what the ledger stores."""

    task: str
    params: dict[str, Any]
    image: ImageFacts
    priority: int
    ref: str | None
    # The model the request named (a base model or a version's name), None when it named none; and where it was.
    model: str | None = None
    model_field: str = "model"


# --- the image ----------------------------------------------------------------------------------

def _looks_like_svg(data: bytes) -> bool:
    head = data[:1024].lstrip().lower()
    return head.startswith(b"<svg") or (head.startswith(b"<?xml") and b"<svg" in data[:4096].lower())


def _unsupported_type(data: bytes) -> str | None:
    if _looks_like_svg(data):
        return "SVG"
    for signature, name in UNSUPPORTED_SIGNATURES:
        if data.startswith(signature):
            return name
    return ISO_MEDIA_BRANDS.get(data[8:12]) if data[4:8] == b"ftyp" else None


def _check_bytes(data: bytes, settings: ServiceSettings, field: str) -> None:
    if not data:
        raise InputError(field, "image is empty (0 bytes)")
    if len(data) > settings.max_image_bytes:
        raise InputError(field, f"image is {len(data)} bytes, over the limit of {settings.max_image_bytes}", 413)
    if kind := _unsupported_type(data):
        raise InputError(field, f"{kind} is not supported; send one of {', '.join(ALLOWED_IMAGE_FORMATS)}", 415)


def _open_image(data: bytes, field: str) -> Image.Image:
    """Reads the header only, with the allowed decoders only."""
    try:
        return Image.open(io.BytesIO(data), formats=ALLOWED_IMAGE_FORMATS)
    except UnidentifiedImageError:
        raise InputError(field, f"not an image: the bytes are none of {', '.join(ALLOWED_IMAGE_FORMATS)}") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InputError(field, f"image rejected as a decompression bomb: {exc}") from None
    except Exception as exc:  # a hostile header can trip any of Pillow's parsers: the input's fault, never a 5xx
        raise InputError(field, f"image header could not be read: {exc}") from None


def _check_pixels(size: tuple[int, int], settings: ServiceSettings, field: str) -> None:
    width, height = size
    if width * height > settings.max_image_pixels:
        raise InputError(field, f"image is {width}x{height} = {width * height} pixels, over the cap of "
                         f"{settings.max_image_pixels} (decompression bomb?)", 422)


def _decode_to_canonical(image: Image.Image, settings: ServiceSettings, field: str) -> ImageFacts:
    try:
        image.load()
        return canonical_copy(image, settings.stored_image_max_side, settings.stored_jpeg_quality)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InputError(field, f"image rejected as a decompression bomb: {exc}") from None
    except Exception as exc:  # truncated or corrupt data raises whatever the decoder hits first
        raise InputError(field, f"image could not be decoded (truncated or corrupt?): {exc}") from None


def _plain_jpeg_facts(plain: bytes, field: str) -> ImageFacts:
    """The plain JPEG's facts once its header reads back: its segments ran whole from SOI to EOI already.

    It is not decoded here. A decode refused little that this does not: of 400 damaged copies of a photo whose
    segments still ran to EOI (bits flipped, bytes zeroed or cut out of the scan), Pillow raised on 5, all bit
    flips; the rest decode to damaged pixels. A file cut short has no EOI and takes the re-encode path, whose
    decode refuses it. What only a decode finds (a broken Huffman table, say) fails the job on the worker, which
    decodes the image anyway, with the decoder's reason: an 0.6 ms decode per photo less at intake."""
    try:
        with Image.open(io.BytesIO(plain), formats=("JPEG",)) as image:
            width, height = image.size
    except Exception as exc:  # as _decode_to_canonical: the input's fault, never a 5xx
        raise InputError(field, f"image could not be read (corrupt?): {exc}") from None
    return stored_facts(plain, "JPEG", width, height)


def check_image(data: bytes, settings: ServiceSettings, field: str = "image") -> ImageFacts:
    """The stored copy (canonical_copy) of an allowed, bounded, fully decodable raster image; else InputError."""
    _check_bytes(data, settings, field)
    if (plain := plain_png_copy(data, settings.stored_image_max_side)) is not None:
        # Already the stored copy, checked as fully decodable without a decoder: a sixth of a decode and re-encode.
        _check_pixels((plain.width, plain.height), settings, field)
        return plain
    Image.MAX_IMAGE_PIXELS = settings.max_image_pixels  # Pillow's own bomb check: a global, one value per process
    with warnings.catch_warnings():
        # Scoped to this decode, so the rest of the process keeps its own warning filters.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with _open_image(data, field) as image:
            _check_pixels(image.size, settings, field)  # the header's size, before a single pixel is decoded
            if image.format == "JPEG":
                plain = plain_jpeg_bytes(data, image, settings.stored_image_max_side)
                if plain is not None:  # stored as its own pixel segments: no re-encode
                    return _plain_jpeg_facts(plain, field)
            return _decode_to_canonical(image, settings, field)


def _check_data_url_type(header: str, field: str) -> None:
    media_type = header[len("data:"):].split(";", 1)[0].strip().lower()
    if media_type not in DATA_URL_TYPES and not media_type.startswith("image/"):
        raise InputError(field, f"the data: URL says {media_type!r}, which is not an image type", 415)


def decode_data_url(value: Any, settings: ServiceSettings, field: str = "image") -> bytes:
    """The bytes of a base64 `data:` URL; an image/* type is not trusted (the bytes decide), another type refused."""
    if not isinstance(value, str) or not value:
        raise InputError(field, "image must be a base64 data: URL string, e.g. data:image/png;base64,iVBORw0...")
    if not value.startswith("data:") or "," not in value:
        raise InputError(field, "image must be a data: URL, e.g. data:image/png;base64,iVBORw0...")
    header, payload = value.split(",", 1)
    if not header.endswith(";base64"):
        raise InputError(field, "image data: URL must be base64-encoded (data:<type>;base64,<data>)")
    _check_data_url_type(header, field)
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


def check_characters(value: str, field: str) -> None:
    """A 400 naming `field` for text Postgres cannot store."""
    # Postgres text cannot hold NUL, and a lone surrogate (legal in JSON's \u escapes) cannot be encoded at all.
    if "\x00" in value:
        raise InputError(field, f"{field} contains a NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InputError(field, f"{field} is not valid Unicode (a lone surrogate?)") from None


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
    check_characters(value, field)
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
    if isinstance(value, str) and len(value) <= 20:  # a form field is a string; a long one is no priority
        try:
            value = int(value)
        except ValueError:
            pass
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
            # The name goes back in the error's `field`: escaped, so a hostile name still makes valid JSON.
            shown = str(name).encode("unicode_escape").decode("ascii")
            raise InputError(prefix + shown, f"unknown field {name!r}; allowed: {', '.join(allowed)}")


def check_job(raw: dict[str, Any], image_bytes: Callable[[], bytes], settings: ServiceSettings,
              prefix: str = "") -> CheckedJob:
    """Every check of one job: the cheap fields first, then the image's bytes (decoded only then)."""
    task = check_task(raw.get("task"), prefix + "task")
    params = check_params(task, raw, settings, prefix)
    priority = check_priority(raw.get("priority"), settings, prefix + "priority")
    ref = check_ref(raw.get("ref"), settings, prefix + "ref")
    model = check_model_name(raw.get("model"), prefix + "model")
    image_field = prefix + ("image_url" if raw.get("image_url") is not None else "image")
    image = check_image(image_bytes(), settings, image_field)
    return CheckedJob(task=task, params=params, image=image, priority=priority, ref=ref, model=model,
                      model_field=prefix + "model")
