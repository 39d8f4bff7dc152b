"""`lensq jobs watch BATCH_ID`: follows a batch live (a bar with its counts by status) until every job is final."""
from __future__ import annotations

import sys
import time
from typing import TextIO

from tqdm import tqdm

from services.client import LensqClient

# Exit statuses: every job succeeded; some failed or were cancelled; the API refused; the wait ran out.
ALL_SUCCEEDED, SOME_NOT_SUCCEEDED, API_ERROR, TIMED_OUT = 0, 1, 2, 3
BAR_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}] {postfix}"
SHOWN_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")


def counts_text(counts: dict[str, int]) -> str:
    """`queued 3 · running 2 · succeeded 10 · failed 0 · cancelled 0`."""
    return " · ".join(f"{status} {counts.get(status, 0)}" for status in SHOWN_STATUSES)


def exit_status(batch: dict, *, allow_failed: bool) -> int:
    """0 when every job succeeded (or failures are allowed), else 1."""
    not_succeeded = batch["counts"].get("failed", 0) + batch["counts"].get("cancelled", 0)
    return ALL_SUCCEEDED if allow_failed or not not_succeeded else SOME_NOT_SUCCEEDED


def watch_batch(client: LensqClient, batch_id: str, *, interval: float = 1.0, timeout: float | None = None,
                stream: TextIO | None = None) -> tuple[dict, bool]:
    """Polls the batch until it is finished or `timeout` passes, drawing its progress; returns the last state
    read and whether it finished."""
    deadline = None if timeout is None else time.monotonic() + timeout
    batch = client.get_batch(batch_id)
    with tqdm(total=batch["total"], initial=batch["done"], unit="job", desc=f"batch {batch_id[:8]}",
              bar_format=BAR_FORMAT, file=stream or sys.stderr) as bar:
        while True:
            bar.update(batch["done"] - bar.n)
            bar.set_postfix_str(counts_text(batch["counts"]))
            if batch["finished"]:
                return batch, True
            if deadline is not None and time.monotonic() >= deadline:
                return batch, False
            time.sleep(interval)
            batch = client.get_batch(batch_id)
