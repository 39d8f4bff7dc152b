"""`lensq batch`: a folder of images or a JSONL file through the API into a results JSONL or CSV, resumable."""
from __future__ import annotations

import csv
import hashlib
import io
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from tqdm import tqdm

from services.client import LensqClient, image_data_url

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff"}
OUTPUT_FORMATS = ("jsonl", "csv")
# Rate and time left are part of the bar on purpose: a long run says how fast it goes and when it will end.
BAR_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}]"


@dataclass(frozen=True)
class BatchInput:
    """One item to send: its reference (for resuming and for the output) and where its image is."""

    ref: str
    image_path: Path | None
    fields: dict[str, Any] = field(default_factory=dict)


def items_from_folder(folder: Path) -> list[BatchInput]:
    """Every image file under the folder, sorted; the ref is its path relative to the folder."""
    paths = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    return [BatchInput(ref=str(p.relative_to(folder)), image_path=p) for p in paths]


def items_from_jsonl(path: Path) -> list[BatchInput]:
    """Items from a JSONL file: `image` a path (relative to the file) or a data: URL; ref defaults to line N."""
    items = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        fields = json.loads(line)
        image = fields.pop("image")
        ref = fields.pop("ref", None) or (image if not image.startswith("data:") else f"line {number}")
        if image.startswith("data:"):
            items.append(BatchInput(ref=ref, image_path=None, fields={**fields, "image": image}))
        else:
            items.append(BatchInput(ref=ref, image_path=(path.parent / image), fields=fields))
    return items


class ResultsFile:
    """The output of `lensq batch`, JSONL or CSV: which refs it already holds, and appending one row per item.

    Every row is one physical line (CSV text fields have their line breaks replaced), so a line cut short by an
    interrupted run is recognised, dropped before appending, and its item runs again."""

    JSONL_FIELDS = ("ref", "job_id", "task", "status", "result", "error")
    # `output` is the result's main value (caption, answer or label) for spreadsheets; `result` the whole, as JSON.
    CSV_FIELDS = ("ref", "job_id", "task", "status", "output", "error", "result")

    def __init__(self, path: Path, fmt: str):
        if fmt not in OUTPUT_FORMATS:
            raise ValueError(f"unknown output format {fmt!r}; one of {', '.join(OUTPUT_FORMATS)}")
        self.path, self.format = path, fmt

    def _complete_lines(self) -> list[str]:
        if not self.path.exists():
            return []
        text = self.path.read_text(encoding="utf-8")
        return text.splitlines() if text.endswith("\n") else text.splitlines()[:-1]

    def _check_header(self, lines: list[str]) -> None:
        header = ",".join(self.CSV_FIELDS)
        if self.format == "csv" and lines and lines[0] != header:
            raise ValueError(f"{self.path} is not a LensQ CSV (its first line is not {header!r}); "
                             "choose another --out or --format")

    def refs_done(self) -> set[str]:
        """Refs already written (a resumed run skips them); a cut or unreadable line counts as not written."""
        lines = self._complete_lines()
        self._check_header(lines)
        if self.format == "csv":
            return {row[0] for row in csv.reader(lines[1:]) if len(row) == len(self.CSV_FIELDS)}
        done = set()
        for line in lines:
            try:
                done.add(json.loads(line)["ref"])
            except (ValueError, KeyError, TypeError):
                continue
        return done

    def open_for_append(self) -> TextIO:
        """The file opened for appending: a trailing cut line dropped, a CSV header written if the file is new."""
        lines = self._complete_lines()
        self._check_header(lines)
        kept = "".join(line + "\n" for line in lines)
        if self.path.exists() and self.path.read_text(encoding="utf-8") != kept:
            self.path.write_text(kept, encoding="utf-8")
        out = open(self.path, "a", encoding="utf-8", newline="")
        if self.format == "csv" and not lines:
            out.write(",".join(self.CSV_FIELDS) + "\n")
        return out

    def line(self, row: dict[str, Any]) -> str:
        """One item's result as one line of this format."""
        if self.format == "jsonl":
            return json.dumps({key: row[key] for key in self.JSONL_FIELDS}) + "\n"
        result = row.get("result") or {}
        output = next((result[key] for key in ("caption", "answer", "label") if key in result), "")
        values = {**row, "output": output, "result": json.dumps(row["result"]) if row["result"] is not None else ""}
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerow([one_line(values.get(key)) for key in self.CSV_FIELDS])
        return buffer.getvalue()


def one_line(value: Any) -> str:
    """A CSV cell on one physical line."""
    return "" if value is None else " ".join(str(value).splitlines())


def output_format(out_path: Path, requested: str | None) -> str:
    """The format asked for, else the one the output's suffix names (.csv), else JSONL."""
    if requested:
        return requested
    return "csv" if out_path.suffix.lower() == ".csv" else "jsonl"


def _request_item(item: BatchInput, common: dict[str, Any]) -> dict[str, Any]:
    body = {**common, **item.fields, "ref": item.ref}
    if item.image_path is not None:
        body["image"] = image_data_url(item.image_path.read_bytes())
    return body


def _chunk_key(task: str, body_items: list[dict[str, Any]]) -> str:
    """A deterministic Idempotency-Key: resubmitting the same chunk after a crash returns the same batch."""
    digest = hashlib.sha256(json.dumps([task, body_items], sort_keys=True).encode()).hexdigest()
    return f"lensq-batch-{digest[:40]}"


def _chunks(items: list[BatchInput], size: int) -> Iterator[list[BatchInput]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


@dataclass
class _Pending:
    batch_id: str
    done: int = 0


def _collect(client: LensqClient, pending: list[_Pending], out: TextIO, results: ResultsFile,
             bar: tqdm) -> list[_Pending]:
    """Polls each pending batch; a finished one's results are appended to the output. Returns the unfinished."""
    still = []
    for entry in pending:
        batch = client.get_batch(entry.batch_id)
        bar.update(batch["done"] - entry.done)
        entry.done = batch["done"]
        if not batch["finished"]:
            still.append(entry)
            continue
        out.write("".join(results.line(row) for row in client.batch_results(entry.batch_id)))
        out.flush()
    return still


def run_batch_command(client: LensqClient, *, items: list[BatchInput], task: str, common: dict[str, Any],
                      out_path: Path, chunk_size: int = 100, max_in_flight: int = 8, poll: float = 0.5,
                      fmt: str | None = None) -> int:
    """Sends the items not yet in `out_path` in chunks, and appends one row per item as chunks finish."""
    results = ResultsFile(out_path, output_format(out_path, fmt))
    done = results.refs_done()
    todo = [item for item in items if item.ref not in done]
    pending: list[_Pending] = []
    with results.open_for_append() as out, tqdm(total=len(items), initial=len(items) - len(todo), unit="img",
                                                desc=f"lensq {task}", bar_format=BAR_FORMAT) as bar:
        for chunk in _chunks(todo, chunk_size):
            while len(pending) >= max_in_flight:
                pending = _collect(client, pending, out, results, bar)
                if len(pending) >= max_in_flight:
                    time.sleep(poll)
            body_items = [_request_item(item, common) for item in chunk]
            batch = client.submit_batch(body_items, task=task, idempotency_key=_chunk_key(task, body_items))
            pending.append(_Pending(batch_id=batch["id"]))
        while pending:
            pending = _collect(client, pending, out, results, bar)
            if pending:
                time.sleep(poll)
    return len(todo)
