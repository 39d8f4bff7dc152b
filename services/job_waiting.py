"""Waits, without blocking the event loop, for jobs to reach a final status by reading the ledger."""
from __future__ import annotations

import asyncio
import time
import uuid

from fastapi.concurrency import run_in_threadpool
from sqlalchemy.orm import Session, sessionmaker

from db.models import Job
from db.queries import get_jobs, is_final


def _read_jobs(session_factory: sessionmaker[Session], tenant_id: uuid.UUID, job_ids: list[uuid.UUID]) -> dict:
    with session_factory() as session:
        jobs = get_jobs(session, tenant_id=tenant_id, job_ids=job_ids)
        session.expunge_all()  # read after the session closes: plain values, no lazy loads
        return {job.id: job for job in jobs}


async def wait_for_jobs(session_factory: sessionmaker[Session], *, tenant_id: uuid.UUID, job_ids: list[uuid.UUID],
                        timeout: float, poll_seconds: float) -> dict[uuid.UUID, Job]:
    """The jobs as they are once all are final, or as they are at the deadline (some still queued or running)."""
    deadline = time.monotonic() + timeout
    while True:
        jobs = await run_in_threadpool(_read_jobs, session_factory, tenant_id, job_ids)
        if all(is_final(job.status) for job in jobs.values()) or time.monotonic() >= deadline:
            return jobs
        # Each poll is one indexed read by primary key; the interval bounds the added latency.
        await asyncio.sleep(min(poll_seconds, max(0.0, deadline - time.monotonic())))
