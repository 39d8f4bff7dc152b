"""Counts the metrics endpoints read from the ledger: jobs by task and status, queue depth, batch sizes."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from db.models import Job, JobStatus, utcnow
from db.session import is_postgres

WRITTEN_STATUSES = (JobStatus.succeeded.value, JobStatus.failed.value)


@dataclass(frozen=True)
class QueueStats:
    """One task queue right now: jobs waiting, jobs leased to a worker, and the oldest waiting job's age."""

    queue: str
    task: str
    queued: int = 0
    running: int = 0
    oldest_queued_seconds: float = 0.0


@dataclass(frozen=True)
class LedgerTotals:
    """Every job by (task, status, error_code), and every written batch's size by (task, size)."""

    jobs: dict[tuple[str, str, str], int] = field(default_factory=dict)
    batch_sizes: dict[tuple[str, int], int] = field(default_factory=dict)


def limit_statement_time(session: Session, seconds: float) -> None:
    """Postgres cancels this transaction's statements after `seconds` (a scrape must not pile up on a big ledger)."""
    if is_postgres(session):
        session.execute(text(f"SET LOCAL statement_timeout = {max(1, int(seconds * 1000))}"))


def queue_stats(session: Session, *, now: datetime | None = None) -> list[QueueStats]:
    """Queued and running jobs per queue: reads only active jobs (the partial index on queued/running rows)."""
    now = now or utcnow()
    rows = session.execute(
        select(Job.queue, Job.task, Job.status, func.count(), func.min(Job.queued_at))
        .where(Job.status.in_([JobStatus.queued.value, JobStatus.running.value]))
        .group_by(Job.queue, Job.task, Job.status)
    )
    by_queue: dict[str, dict] = {}
    for queue, task, status, count, oldest in rows:
        entry = by_queue.setdefault(queue, {"queue": queue, "task": task})
        entry[status] = entry.get(status, 0) + count
        if status == JobStatus.queued.value and oldest is not None:
            entry["oldest_queued_seconds"] = max(0.0, (now - oldest).total_seconds())
    return [QueueStats(**entry) for entry in by_queue.values()]


def ledger_totals(session: Session) -> LedgerTotals:
    """Whole-ledger counts: a scan of the jobs table, so callers cache it and bound it (limit_statement_time).

    A batch is the jobs one claim leased: a written job keeps its claim's lease token, so grouping written jobs by
    token gives each batch's size (jobs whose result was discarded or cancelled are not in it)."""
    jobs = session.execute(
        select(Job.task, Job.status, func.coalesce(Job.error_code, ""), func.count())
        .group_by(Job.task, Job.status, Job.error_code)
    )
    per_batch = (
        select(Job.task.label("task"), func.count().label("size"))
        .where(Job.lease_token.is_not(None), Job.status.in_(WRITTEN_STATUSES))
        .group_by(Job.lease_token, Job.task)
        .subquery()
    )
    sizes = session.execute(select(per_batch.c.task, per_batch.c.size, func.count()).group_by(per_batch.c.task,
                                                                                                per_batch.c.size))
    return LedgerTotals(jobs={(task, status, code): count for task, status, code, count in jobs},
                        batch_sizes={(task, size): count for task, size, count in sizes})
