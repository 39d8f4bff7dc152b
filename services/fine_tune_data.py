"""Reads and checks each line of a fine-tuning JSONL file before training starts: fields, images, texts, labels."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from db.queries import ImageFacts
from services.config import ServiceSettings
from services.errors import InputError
from services.input_checks import check_characters, check_image, decode_data_url

SENTIMENT_LABELS = ("negative", "neutral", "positive")
# The field holding each task's target, and whether the line's `text` is required, optional or not used.
TARGET_FIELD = {"sentiment": "label", "classify": "label", "vqa": "answer", "caption": "caption"}
TEXT_USE = {"sentiment": "optional", "vqa": "required", "caption": "unused", "classify": "unused"}
LABEL_TASKS = ("sentiment", "classify")
SHA256_HEX = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class LineError:
    """What is wrong with one line of a file."""

    line: int
    field: str
    message: str


@dataclass(frozen=True)
class ParsedLine:
    """One readable line: its image (by sha256), text and target."""

    line: int
    image_sha256: str
    text: str
    target: str
    uploaded: bool  # True: the image came in the line (a data: URL); False: it names a stored image

    @property
    def key(self) -> tuple[str, str]:
        """What makes two lines the same example (and a repeat across splits a leak)."""
        return self.image_sha256, self.text


@dataclass
class ParsedFile:
    """A file's readable lines, the images they carried, and the lines that failed."""

    field: str  # training_file | validation_file
    lines: list[ParsedLine] = field(default_factory=list)
    images: dict[str, ImageFacts] = field(default_factory=dict)
    errors: list[LineError] = field(default_factory=list)
    line_count: int = 0


def _check_string(value: Any, name: str, limit: int, *, required: bool) -> str:
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        raise InputError(name, f"{name} must be a string" + (" (it is required)" if value is None else ""))
    if required and not value.strip():
        raise InputError(name, f"{name} must not be empty")
    if len(value) > limit:
        raise InputError(name, f"{name} is {len(value)} characters, over the limit of {limit}")
    check_characters(value, name)
    return value


def _check_fields(record: dict[str, Any], task: str) -> None:
    target = TARGET_FIELD[task]
    allowed = ["image", "image_sha256", target] + ([] if TEXT_USE[task] == "unused" else ["text"])
    for name in record:
        if name not in allowed:
            shown = str(name).encode("unicode_escape").decode("ascii")[:64]
            raise InputError(shown, f"unknown field {shown!r} for task {task}; allowed: {', '.join(allowed)}")
    if target not in record:
        raise InputError(target, f"{target} is required for task {task}")
    if TEXT_USE[task] == "required" and "text" not in record:
        raise InputError("text", f"text (the question) is required for task {task}")
    if ("image" in record) == ("image_sha256" in record):
        raise InputError("image", "give exactly one of image (a base64 data: URL) or image_sha256")


def _check_target(value: Any, task: str, labels: tuple[str, ...], settings: ServiceSettings) -> str:
    name = TARGET_FIELD[task]
    target = _check_string(value, name, settings.fine_tune_max_target_chars, required=True).strip()
    if task in LABEL_TASKS and target not in labels:
        raise InputError(name, f"unknown label {target!r}; one of {', '.join(labels)}")
    return target


def _read_image(record: dict[str, Any], parsed: ParsedFile, settings: ServiceSettings) -> tuple[str, bool]:
    if "image_sha256" in record:
        value = record["image_sha256"]
        if not isinstance(value, str) or not SHA256_HEX.fullmatch(value):
            raise InputError("image_sha256", "image_sha256 must be 64 lowercase hex digits (an uploaded image's)")
        return value, False
    image = check_image(decode_data_url(record["image"], settings), settings)  # the checks every job image gets
    parsed.images.setdefault(image.sha256, image)
    return image.sha256, True


def _parse_line(raw: str, number: int, task: str, labels: tuple[str, ...], parsed: ParsedFile,
                settings: ServiceSettings) -> ParsedLine:
    try:
        record = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise InputError("json", f"not valid JSON: {exc}") from None
    if not isinstance(record, dict):
        raise InputError("json", "each line must be a JSON object")
    _check_fields(record, task)
    limit = settings.max_question_chars if task == "vqa" else settings.max_text_chars
    text = _check_string(record.get("text"), "text", limit, required=TEXT_USE[task] == "required")
    target = _check_target(record[TARGET_FIELD[task]], task, labels, settings)
    sha256, uploaded = _read_image(record, parsed, settings)  # last: the costly check runs on otherwise good lines
    return ParsedLine(line=number, image_sha256=sha256, text=text, target=target, uploaded=uploaded)


def parse_file(data: bytes, *, file_field: str, task: str, labels: tuple[str, ...],
               settings: ServiceSettings) -> ParsedFile:
    """Every line of a JSONL file checked; blank lines are skipped, failing lines kept as errors."""
    parsed = ParsedFile(field=file_field)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(file_field, f"the file is not UTF-8 text (JSONL): {exc}", 400) from None
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        parsed.line_count += 1
        if parsed.line_count > settings.fine_tune_max_examples:
            raise InputError(file_field, f"the file has over {settings.fine_tune_max_examples} examples", 400)
        try:
            parsed.lines.append(_parse_line(raw, number, task, labels, parsed, settings))
        except InputError as exc:
            parsed.errors.append(LineError(number, exc.field, exc.message))
    return parsed


def check_references(parsed: ParsedFile, known: set[str]) -> None:
    """Lines naming an image the tenant never uploaded become errors (another tenant's image is unknown too)."""
    for line in [line for line in parsed.lines if not line.uploaded and line.image_sha256 not in known]:
        parsed.errors.append(LineError(line.line, "image_sha256", "no image with this sha256 was uploaded by "
                                                                  "this tenant"))
        parsed.lines.remove(line)


def raise_line_errors(parsed: ParsedFile, settings: ServiceSettings) -> None:
    """A 400 naming the file and its first bad lines, if any line failed."""
    if not parsed.errors:
        return
    errors = sorted(parsed.errors, key=lambda error: error.line)
    shown = errors[:settings.fine_tune_reported_lines]
    details = "; ".join(f"line {error.line} ({error.field}): {error.message}" for error in shown)
    more = f" (first {len(shown)} shown)" if len(errors) > len(shown) else ""
    raise InputError(parsed.field, f"{len(errors)} line(s) failed the checks{more}: {details}", 400)
