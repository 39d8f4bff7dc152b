"""Loads a user's own image + text examples from a JSON Lines file, naming the line and field of each error.

Each non-blank line is a JSON object:
    {"image": "photos/cat.png", "text": "...", "label": "positive"}
`image` is a path (a relative one is resolved against the JSONL file's folder); `text` or
`question` is optional; exactly one target among `label`, `answer`, `caption` -- or, when a
`task` is given, at least that task's target (the other targets are then ignored).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TARGET_FIELDS: tuple[str, ...] = ("label", "answer", "caption")
TEXT_FIELDS: tuple[str, ...] = ("text", "question")
TARGET_FOR_TASK: dict[str, str] = {
    "sentiment": "label",
    "classify": "label",
    "answer": "answer",
    "vqa": "answer",
    "caption": "caption",
}


class JsonlError(ValueError):
    """A bad line in a JSONL file; `line` is 1-based and `field` names the offending field (or None)."""

    def __init__(self, path: Path, line: int, field: str | None, reason: str) -> None:
        self.path, self.line, self.field, self.reason = path, line, field, reason
        where = f"{path}:{line}" + (f": field {field!r}" if field else "")
        super().__init__(f"{where}: {reason}")


@dataclass(frozen=True)
class JsonlRecord:
    """One example: the resolved image path, the optional text, and the target with its kind."""

    image_path: Path
    text: str | None
    target: str
    target_kind: str  # "label", "answer" or "caption"


def parse_line(raw: str, path: Path, line: int) -> dict[str, Any]:
    """The line's JSON object."""
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as error:
        raise JsonlError(path, line, None, f"invalid JSON: {error.msg} (column {error.colno})") from None
    if not isinstance(value, dict):
        raise JsonlError(path, line, None, f"expected a JSON object, got {type(value).__name__}")
    return value


def string_field(row: dict[str, Any], field: str, path: Path, line: int) -> str:
    """The row's non-empty string `field`."""
    value = row[field]
    if not isinstance(value, str):
        raise JsonlError(path, line, field, f"must be a string, got {type(value).__name__}")
    if not value.strip():
        raise JsonlError(path, line, field, "must not be empty")
    return value


def record_image(row: dict[str, Any], path: Path, line: int) -> Path:
    """The row's image path, resolved against the JSONL file's folder; the file must exist."""
    if "image" not in row:
        raise JsonlError(path, line, "image", "missing")
    image_path = Path(string_field(row, "image", path, line))
    if not image_path.is_absolute():
        image_path = path.parent / image_path
    if not image_path.is_file():
        raise JsonlError(path, line, "image", f"no such file: {image_path}")
    return image_path


def record_text(row: dict[str, Any], path: Path, line: int) -> str | None:
    """The row's `text` or `question`, if any (not both)."""
    present = [field for field in TEXT_FIELDS if field in row]
    if len(present) > 1:
        raise JsonlError(path, line, present[1], f"give one of {TEXT_FIELDS}, not both")
    return string_field(row, present[0], path, line) if present else None


def record_target(row: dict[str, Any], path: Path, line: int, task: str | None) -> tuple[str, str]:
    """(target, target_kind): the task's target field, or the row's only target field."""
    if task is not None:
        kind = TARGET_FOR_TASK[task]
        if kind not in row:
            raise JsonlError(path, line, kind, f"missing (task {task!r} needs it)")
        return string_field(row, kind, path, line), kind
    present = [field for field in TARGET_FIELDS if field in row]
    if not present:
        raise JsonlError(path, line, None, f"no target: give one of {TARGET_FIELDS}")
    if len(present) > 1:
        raise JsonlError(path, line, present[1], f"more than one target ({present}); pass a task to choose")
    return string_field(row, present[0], path, line), present[0]


def load_jsonl(path: str | Path, task: str | None = None) -> list[JsonlRecord]:
    """Every record of the JSONL file; the first bad line raises JsonlError. `task` picks the target."""
    if task is not None and task not in TARGET_FOR_TASK:
        raise ValueError(f"unknown task {task!r}; expected one of {tuple(TARGET_FOR_TASK)}")
    path = Path(path)
    records = []
    with path.open(encoding="utf-8") as lines:
        for line, raw in enumerate(lines, start=1):
            if not raw.strip():
                continue
            row = parse_line(raw, path, line)
            image_path = record_image(row, path, line)
            text = record_text(row, path, line)
            target, kind = record_target(row, path, line, task)
            records.append(JsonlRecord(image_path, text, target, kind))
    return records
