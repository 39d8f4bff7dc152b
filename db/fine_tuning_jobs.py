"""Queries of fine-tuning jobs as the API sees them: create with examples, list, read, cancel, events; tenant-scoped."""
from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.orm import Session

from db.models import FineTuneStatus, FineTuningEvent, FineTuningExample, FineTuningJob, Image, utcnow
from db.pages import newest_first
from db.queries import ImageFacts, store_image

FINAL_FINE_TUNE_STATUSES = (FineTuneStatus.succeeded.value, FineTuneStatus.failed.value,
                            FineTuneStatus.cancelled.value)


@dataclass(frozen=True)
class NewExample:
    """One checked example, in its split: what fine_tuning_examples stores."""

    split: str  # train | validation | test
    line: int  # 1-based line of its file
    image_sha256: str
    text: str
    target: str


@dataclass(frozen=True)
class NewEvent:
    """An event written with the job (created, validated, warnings)."""

    message: str
    level: str = "info"
    data: dict[str, Any] | None = None


@dataclass
class NewFineTuningJob:
    """Everything the API hands the ledger for one fine-tuning job (its id chosen by the caller, for its events)."""

    id: uuid.UUID
    base_model: str
    task: str
    queue: str
    training_file_id: uuid.UUID
    validation_file_id: uuid.UUID | None
    hyperparameters: dict[str, Any]
    suffix: str | None
    metadata: dict[str, str] | None
    data_report: dict[str, Any]
    max_attempts: int
    images: list[ImageFacts] = field(default_factory=list)  # images of data: URL lines, stored once each
    examples: list[NewExample] = field(default_factory=list)
    events: list[NewEvent] = field(default_factory=list)


def known_image_hashes(session: Session, *, tenant_id: uuid.UUID, hashes: Iterable[str]) -> set[str]:
    """Which of these sha256s name an image the tenant has stored (another tenant's count as unknown)."""
    wanted = sorted(set(hashes))
    if not wanted:
        return set()
    stmt = select(Image.sha256).where(Image.tenant_id == tenant_id, Image.sha256.in_(wanted))
    return set(session.scalars(stmt))


def create_fine_tuning_job(session: Session, *, tenant_id: uuid.UUID, new: NewFineTuningJob) -> FineTuningJob:
    """The job, its images, its examples in their splits and its first events; the caller commits."""
    for image in {image.sha256: image for image in new.images}.values():
        store_image(session, tenant_id=tenant_id, image=image)
    now = utcnow()
    job = FineTuningJob(
        id=new.id, tenant_id=tenant_id, base_model=new.base_model, task=new.task, queue=new.queue,
        training_file_id=new.training_file_id, validation_file_id=new.validation_file_id,
        hyperparameters=new.hyperparameters, suffix=new.suffix, job_metadata=new.metadata,
        status=FineTuneStatus.queued.value, data_report=new.data_report, max_attempts=new.max_attempts,
        created_at=now, updated_at=now)
    session.add(job)
    session.flush()
    if new.examples:  # one executemany, not one ORM object per line
        session.execute(insert(FineTuningExample), [
            {"job_id": job.id, "tenant_id": tenant_id, "split": example.split, "line": example.line,
             "image_sha256": example.image_sha256, "text": example.text, "target": example.target}
            for example in new.examples])
    add_events(session, job_id=job.id, events=new.events)
    return job


def add_events(session: Session, *, job_id: uuid.UUID, events: Iterable[NewEvent]) -> None:
    """Appends events to a job's log, in order (their ids increase)."""
    for event in events:
        session.add(FineTuningEvent(job_id=job_id, level=event.level, message=event.message, data=event.data,
                                    created_at=utcnow()))
    session.flush()


def get_fine_tuning_job(session: Session, *, tenant_id: uuid.UUID, job_id: uuid.UUID) -> FineTuningJob | None:
    """The tenant's job (without its checkpoint bytes), or None: another tenant's job is None too."""
    stmt = select(FineTuningJob).where(FineTuningJob.id == job_id, FineTuningJob.tenant_id == tenant_id)
    return session.scalar(stmt)


def list_fine_tuning_jobs(session: Session, *, tenant_id: uuid.UUID, limit: int,
                          after: tuple[datetime, uuid.UUID] | None = None,
                          metadata: dict[str, str] | None = None) -> list[FineTuningJob]:
    """The tenant's jobs, newest first, past the (created_at, id) cursor; only those tagged with `metadata`."""
    stmt = select(FineTuningJob).where(FineTuningJob.tenant_id == tenant_id)
    rows = session.scalars(newest_first(stmt, FineTuningJob, after))
    if not metadata:
        return list(rows.fetchmany(limit))
    # JSON columns compare differently per dialect: tags are matched here (a tenant's jobs are few).
    return [row for row in rows if all((row.job_metadata or {}).get(k) == v for k, v in metadata.items())][:limit]


def request_cancel(session: Session, *, tenant_id: uuid.UUID, job_id: uuid.UUID) -> FineTuningJob | None:
    """A queued job is cancelled at once; a running one gets cancel_requested_at (its worker stops and marks it
    cancelled). Each writes an event; a final job is left as it is. Returns the job as it now is."""
    now = utcnow()
    mine = (FineTuningJob.id == job_id, FineTuningJob.tenant_id == tenant_id)
    cancelled = session.execute(
        update(FineTuningJob).where(*mine, FineTuningJob.status == FineTuneStatus.queued.value)
        .values(status=FineTuneStatus.cancelled.value, finished_at=now, updated_at=now, lease_expires_at=None))
    if cancelled.rowcount:
        add_events(session, job_id=job_id, events=[NewEvent("Fine-tuning job cancelled before it started")])
    else:
        requested = session.execute(
            update(FineTuningJob).where(*mine, FineTuningJob.status == FineTuneStatus.running.value,
                                        FineTuningJob.cancel_requested_at.is_(None))
            .values(cancel_requested_at=now, updated_at=now))
        if requested.rowcount:
            add_events(session, job_id=job_id, events=[NewEvent("Cancellation requested; the worker will stop "
                                                                "at its next step")])
    session.expire_all()
    return get_fine_tuning_job(session, tenant_id=tenant_id, job_id=job_id)


def count_active_fine_tunes(session: Session, *, tenant_id: uuid.UUID) -> int:
    """How many of the tenant's fine-tuning jobs are not final yet."""
    active = (FineTuneStatus.validating_files.value, FineTuneStatus.queued.value, FineTuneStatus.running.value)
    stmt = select(func.count()).select_from(FineTuningJob).where(FineTuningJob.tenant_id == tenant_id,
                                                                 FineTuningJob.status.in_(active))
    return session.scalar(stmt)


def list_events(session: Session, *, job_id: uuid.UUID, limit: int, after: int | None = None,
                newest_first: bool = True) -> list[FineTuningEvent]:
    """A job's events past the `after` id in the listing's order (newest first, or oldest first)."""
    stmt = select(FineTuningEvent).where(FineTuningEvent.job_id == job_id)
    if after is not None:
        stmt = stmt.where(FineTuningEvent.id < after if newest_first else FineTuningEvent.id > after)
    order = FineTuningEvent.id.desc() if newest_first else FineTuningEvent.id
    return list(session.scalars(stmt.order_by(order).limit(limit)))

