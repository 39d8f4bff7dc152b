"""The training worker's queries on fine-tuning jobs: claim, lease, checkpoint, events, the end of a run, the sweep."""
from __future__ import annotations

import secrets
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from db.models import (
    FineTuneStatus, FineTuningEvent, FineTuningExample, FineTuningJob, Image, ModelVersion, Tenant,
    TenantDefaultModel, utcnow,
)
from db.session import is_postgres

RUNNING = FineTuneStatus.running.value
QUEUED = FineTuneStatus.queued.value


@dataclass(frozen=True)
class ClaimedFineTune:
    """A fine-tuning job a worker now holds a lease on, with what it needs to train (examples are read apart)."""

    id: uuid.UUID
    tenant_id: uuid.UUID
    tenant_name: str
    base_model: str
    task: str
    queue: str
    hyperparameters: dict[str, Any]
    suffix: str | None
    data_report: dict[str, Any] | None
    checkpoint: bytes | None
    checkpoint_step: int | None
    attempts: int
    max_attempts: int
    lease_token: str


@dataclass(frozen=True)
class StoredExample:
    """One checked example of a job as stored: its file line, the image bytes, its text and target."""

    split: str
    line: int
    image_data: bytes
    text: str
    target: str


@dataclass(frozen=True)
class LeaseState:
    """What a lease renewal saw: whether this worker still holds the job, and whether the tenant cancelled it."""

    held: bool
    cancel_requested: bool


def add_event(session: Session, *, job_id: uuid.UUID, message: str, level: str = "info",
              data: dict[str, Any] | None = None) -> None:
    """Appends one event to the job's stream."""
    session.add(FineTuningEvent(job_id=job_id, level=level, message=message, data=data, created_at=utcnow()))


def claim_fine_tuning_job(session: Session, *, queue: str, worker_id: str,
                          lease_seconds: float) -> ClaimedFineTune | None:
    """Leases the oldest queued job of `queue` to the worker (FOR UPDATE SKIP LOCKED), or None if none waits."""
    stmt = (select(FineTuningJob.id).where(FineTuningJob.queue == queue, FineTuningJob.status == QUEUED)
            .order_by(FineTuningJob.created_at, FineTuningJob.id).limit(1))
    if is_postgres(session):
        stmt = stmt.with_for_update(skip_locked=True)  # concurrent workers take different jobs
    job_id = session.scalar(stmt)
    if job_id is None:
        return None
    now, token = utcnow(), secrets.token_hex(16)
    session.execute(
        update(FineTuningJob).where(FineTuningJob.id == job_id).values(
            status=RUNNING, attempts=FineTuningJob.attempts + 1, lease_owner=worker_id, lease_token=token,
            lease_expires_at=now + timedelta(seconds=lease_seconds),
            started_at=func.coalesce(FineTuningJob.started_at, now), updated_at=now,
        )
    )
    row = session.execute(
        select(FineTuningJob, Tenant.name).join(Tenant, Tenant.id == FineTuningJob.tenant_id)
        .where(FineTuningJob.id == job_id).execution_options(populate_existing=True)
    ).one()
    job = row[0]
    return ClaimedFineTune(
        id=job.id, tenant_id=job.tenant_id, tenant_name=row[1], base_model=job.base_model, task=job.task,
        queue=job.queue, hyperparameters=dict(job.hyperparameters or {}), suffix=job.suffix,
        data_report=job.data_report, checkpoint=job.checkpoint, checkpoint_step=job.checkpoint_step,
        attempts=job.attempts, max_attempts=job.max_attempts, lease_token=token,
    )


def _held(job_id: uuid.UUID, lease_token: str):
    """The condition under which a write is this lease holder's to make."""
    return (FineTuningJob.id == job_id) & (FineTuningJob.lease_token == lease_token) & (FineTuningJob.status == RUNNING)


def renew_fine_tuning_lease(session: Session, *, job_id: uuid.UUID, lease_token: str,
                            lease_seconds: float) -> LeaseState:
    """Pushes back the lease's expiry if this worker still holds it; reports whether the tenant asked to cancel."""
    now = utcnow()
    held = session.execute(
        update(FineTuningJob).where(_held(job_id, lease_token))
        .values(lease_expires_at=now + timedelta(seconds=lease_seconds))
    ).rowcount > 0
    cancel_at = session.scalar(select(FineTuningJob.cancel_requested_at).where(FineTuningJob.id == job_id))
    return LeaseState(held=held, cancel_requested=cancel_at is not None)


def load_examples(session: Session, *, job_id: uuid.UUID) -> list[StoredExample]:
    """The job's checked examples, each with its image's bytes, in file order within each split."""
    rows = session.execute(
        select(FineTuningExample.split, FineTuningExample.line, Image.data, FineTuningExample.text,
               FineTuningExample.target)
        .join(Image, (Image.tenant_id == FineTuningExample.tenant_id)
              & (Image.sha256 == FineTuningExample.image_sha256))
        .where(FineTuningExample.job_id == job_id)
        .order_by(FineTuningExample.split, FineTuningExample.line, FineTuningExample.id)
    )
    return [StoredExample(split=r[0], line=r[1], image_data=r[2], text=r[3] or "", target=r[4]) for r in rows]


def store_checkpoint(session: Session, *, job_id: uuid.UUID, lease_token: str, state: bytes, step: int) -> bool:
    """Stores a resume state, only while this lease still holds the job (a worker that lost it must not overwrite
    the progress of the one that took over); returns whether it was stored, with its event."""
    stored = session.execute(
        update(FineTuningJob).where(_held(job_id, lease_token))
        .values(checkpoint=state, checkpoint_step=step, trained_steps=step, updated_at=utcnow())
    ).rowcount > 0
    if stored:
        add_event(session, job_id=job_id, message=f"Checkpoint saved at step {step}",
                  data={"checkpoint_step": step, "bytes": len(state)})
    return stored


def tenant_default_version(session: Session, *, tenant_id: uuid.UUID, task: str) -> ModelVersion | None:
    """The version serving the tenant's jobs of `task` that name none (its weights loaded), or None: the base."""
    stmt = (select(ModelVersion).join(TenantDefaultModel, TenantDefaultModel.model_version_id == ModelVersion.id)
            .where(TenantDefaultModel.tenant_id == tenant_id, TenantDefaultModel.task == task))
    version = session.scalar(stmt)
    if version is not None:
        _ = version.weights  # deferred column: loaded while the session is open
    return version


@dataclass(frozen=True)
class NewVersion:
    """What a finished run hands over to become a model version."""

    name: str
    weights: bytes
    weights_sha256: str
    config: dict[str, Any]
    eval: dict[str, Any]
    trained_steps: int


def finish_succeeded(session: Session, *, job: ClaimedFineTune, version: NewVersion) -> bool:
    """Writes the model version and marks the job succeeded, only while this lease holds it; whether it did."""
    now = utcnow()
    done = session.execute(
        update(FineTuningJob).where(_held(job.id, job.lease_token)).values(
            status=FineTuneStatus.succeeded.value, fine_tuned_model=version.name, trained_steps=version.trained_steps,
            finished_at=now, updated_at=now, lease_expires_at=None, error=None,
        )
    ).rowcount > 0
    if not done:
        return False
    session.add(ModelVersion(
        tenant_id=job.tenant_id, name=version.name, base_model=job.base_model, task=job.task,
        fine_tuning_job_id=job.id, weights=version.weights, weights_sha256=version.weights_sha256,
        config=version.config, eval=version.eval, created_at=now,
    ))
    test_metric = (version.eval.get("test") or {}).get("metric")
    baseline_metric = ((version.eval.get("baseline") or {}).get("test") or {}).get("metric")
    add_event(session, job_id=job.id, message=f"Fine-tuning job succeeded: {version.name}",
              data={"fine_tuned_model": version.name, "test_metric": test_metric, "baseline_metric": baseline_metric})
    return True


def finish_cancelled(session: Session, *, job: ClaimedFineTune) -> bool:
    """Marks the job cancelled (its checkpoint kept), only while this lease holds it; whether it did."""
    now = utcnow()
    done = session.execute(
        update(FineTuningJob).where(_held(job.id, job.lease_token)).values(
            status=FineTuneStatus.cancelled.value, finished_at=now, updated_at=now, lease_expires_at=None)
    ).rowcount > 0
    if done:
        add_event(session, job_id=job.id, message="Fine-tuning job cancelled")
    return done


def finish_failed(session: Session, *, job: ClaimedFineTune, error: dict[str, Any]) -> bool:
    """Marks the job failed with an OpenAI-style error {code, message, param}, only while this lease holds it."""
    now = utcnow()
    done = session.execute(
        update(FineTuningJob).where(_held(job.id, job.lease_token)).values(
            status=FineTuneStatus.failed.value, error=error, finished_at=now, updated_at=now, lease_expires_at=None)
    ).rowcount > 0
    if done:
        add_event(session, job_id=job.id, level="error", message=f"Fine-tuning job failed: {error['message']}",
                  data={"error": error})
    return done


def release_to_queue(session: Session, *, job: ClaimedFineTune, reason: str) -> bool:
    """Hands a job back to the queue from a stopping worker (its checkpoint kept, the try not counted)."""
    now = utcnow()
    done = session.execute(
        update(FineTuningJob).where(_held(job.id, job.lease_token)).values(
            status=QUEUED, lease_token=None, lease_owner=None, lease_expires_at=None, updated_at=now,
            attempts=FineTuningJob.attempts - 1)
    ).rowcount > 0
    if done:
        add_event(session, job_id=job.id, message=f"Training paused and re-queued: {reason}")
    return done


def _sweep_one(session: Session, job: FineTuningJob, now: datetime) -> str:
    """What the sweep does with one job whose lease expired: 'cancelled', 'failed' or 'requeued'."""
    job.lease_expires_at, job.lease_token, job.updated_at = None, None, now
    step = job.checkpoint_step or 0
    if job.cancel_requested_at is not None:
        job.status, job.finished_at = FineTuneStatus.cancelled.value, now
        add_event(session, job_id=job.id, message="Fine-tuning job cancelled (its worker was lost)")
        return "cancelled"
    if job.attempts >= job.max_attempts:
        job.status, job.finished_at = FineTuneStatus.failed.value, now
        job.error = {"code": "dead", "param": None,
                     "message": f"dead: its worker was lost (the lease expired) on every attempt "
                                f"({job.attempts} of {job.max_attempts}); not retried again"}
        add_event(session, job_id=job.id, level="error", message=job.error["message"], data={"error": job.error})
        return "failed"
    job.status = QUEUED
    add_event(session, job_id=job.id, level="warning",
              message=f"Worker lost (lease expired) on attempt {job.attempts}; re-queued to resume from step {step}",
              data={"attempt": job.attempts, "checkpoint_step": step})
    return "requeued"


def requeue_expired_fine_tuning(session: Session, *, now: datetime | None = None) -> tuple[dict[str, int], int]:
    """Fine-tuning jobs whose lease expired go back to queued (to resume from their checkpoint), fail after
    max_attempts, or end cancelled if the tenant asked; returns the re-queued per queue and how many failed."""
    now = now or utcnow()
    stmt = select(FineTuningJob).where(FineTuningJob.status == RUNNING, FineTuningJob.lease_expires_at < now)
    if is_postgres(session):
        stmt = stmt.with_for_update(skip_locked=True)
    requeued: Counter[str] = Counter()
    failed = 0
    for job in session.scalars(stmt):
        outcome = _sweep_one(session, job, now)
        if outcome == "requeued":
            requeued[job.queue] += 1
        failed += outcome == "failed"
    session.flush()
    return dict(requeued), failed


def stale_fine_tuning_queues(session: Session, *, stale_seconds: float, now: datetime | None = None) -> list[str]:
    """Queues holding fine-tuning jobs queued and untouched for `stale_seconds` (their doorbell may be lost);
    touches them, so each is rung once per period."""
    now = now or utcnow()
    stale = (FineTuningJob.status == QUEUED) & (FineTuningJob.updated_at < now - timedelta(seconds=stale_seconds))
    queues = sorted(session.scalars(select(FineTuningJob.queue).where(stale).distinct()))
    if queues:
        session.execute(update(FineTuningJob).where(stale).values(updated_at=now))
    return queues


def fine_tuning_queue_has_work(session: Session, *, queue: str) -> bool:
    """Whether any fine-tuning job of the queue is waiting."""
    stmt = select(FineTuningJob.id).where(FineTuningJob.queue == queue, FineTuningJob.status == QUEUED).limit(1)
    return session.scalar(stmt) is not None
