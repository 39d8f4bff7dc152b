"""`lensq batch`: a folder of images or a JSONL file through the API into a results JSONL, resumable."""
from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from services.client import LensqClient, image_data_url

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff"}


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


def refs_already_done(out_path: Path) -> set[str]:
    """Refs already written to the output file (a resumed run skips them)."""
    if not out_path.exists():
        return set()
    done = set()
    for line in out_path.read_text().splitlines():
        try:
            done.add(json.loads(line)["ref"])
        except (ValueError, KeyError, TypeError):
            continue  # a line cut short by an interrupted run: that item runs again
    return done


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


def _collect(client: LensqClient, pending: list[_Pending], out, bar: tqdm) -> list[_Pending]:
    """Polls each pending batch; a finished one's results are appended to the output. Returns the unfinished."""
    still = []
    for entry in pending:
        batch = client.get_batch(entry.batch_id)
        bar.update(batch["done"] - entry.done)
        entry.done = batch["done"]
        if not batch["finished"]:
            still.append(entry)
            continue
        for row in client.batch_results(entry.batch_id):
            out.write(json.dumps({k: row[k] for k in ("ref", "job_id", "task", "status", "result", "error")}) + "\n")
        out.flush()
    return still


def run_batch_command(client: LensqClient, *, items: list[BatchInput], task: str, common: dict[str, Any],
                      out_path: Path, chunk_size: int = 100, max_in_flight: int = 8, poll: float = 0.5) -> int:
    """Sends the items not yet in `out_path` in chunks, and appends one line per item as chunks finish."""
    done = refs_already_done(out_path)
    todo = [item for item in items if item.ref not in done]
    pending: list[_Pending] = []
    with open(out_path, "a") as out, tqdm(total=len(todo), unit="img", desc=f"lensq {task}") as bar:
        for chunk in _chunks(todo, chunk_size):
            while len(pending) >= max_in_flight:
                pending = _collect(client, pending, out, bar)
                if len(pending) >= max_in_flight:
                    time.sleep(poll)
            body_items = [_request_item(item, common) for item in chunk]
            batch = client.submit_batch(body_items, task=task, idempotency_key=_chunk_key(task, body_items))
            pending.append(_Pending(batch_id=batch["id"]))
        while pending:
            pending = _collect(client, pending, out, bar)
            if pending:
                time.sleep(poll)
    return len(todo)
