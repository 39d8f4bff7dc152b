"""Waiting in tests: poll a condition until a deadline, never a fixed sleep."""
from __future__ import annotations

import time
from collections.abc import Callable

import pytest


def wait_until(predicate: Callable[[], object], *, timeout: float, interval: float = 0.25, what: str = "condition"):
    """Polls `predicate` until it returns something truthy (returned), or fails the test at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def final_jobs(session_factory, job_ids: list) -> dict:
    """The jobs among `job_ids` that are final, by id (read straight from the ledger)."""
    from sqlalchemy import select

    from db.models import FINAL_STATUSES, Job

    with session_factory() as session:
        rows = session.scalars(select(Job).where(Job.id.in_(job_ids), Job.status.in_([s.value for s in FINAL_STATUSES])))
        return {row.id: row for row in rows}


def wait_for_final(session_factory, job_ids: list, *, timeout: float) -> dict:
    """Every job of `job_ids` once final (fails the test at the deadline, saying how many were left)."""
    deadline = time.monotonic() + timeout
    while True:
        done = final_jobs(session_factory, job_ids)
        if len(done) == len(job_ids):
            return done
        if time.monotonic() > deadline:
            pytest.fail(f"{len(job_ids) - len(done)} of {len(job_ids)} jobs not final after {timeout:.0f}s")
        time.sleep(0.25)
