"""Stores checked jobs and batches in one transaction, honours Idempotency-Key, then rings the workers."""
from __future__ import annotations

import hashlib
import json
import logging
import uuid
from collections import Counter
from dataclasses import dataclass

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from db.models import Batch, Job
from db.queries import (
    NewJob,
    find_batch_by_idempotency_key,
    find_job_by_idempotency_key,
    insert_batch,
    insert_jobs,
    store_image,
)
from services.config import ServiceSettings
from services.errors import InputError
from services.input_checks import CheckedJob
from workers.celery_app import SETTINGS as WORKER_SETTINGS, queue_for_task, ring_for_new_jobs

log = logging.getLogger(__name__)
IDEMPOTENCY_FIELD = "Idempotency-Key"


def check_idempotency_key(value: str | None, settings: ServiceSettings) -> str | None:
    """The header's value if it is a usable key (1..200 printable characters), None when absent."""
    if value is None:
        return None
    if not value.strip() or len(value) > settings.max_idempotency_key_chars or not value.isprintable():
        raise InputError(IDEMPOTENCY_FIELD, f"must be 1 to {settings.max_idempotency_key_chars} printable characters")
    return value


def _fingerprint(items: list[CheckedJob]) -> str:
    """A hash of what was asked, so a retried request can be told from a different one under the same key."""
    canonical = [
        {"task": j.task, "params": j.params, "priority": j.priority, "ref": j.ref, "image": j.image.sha256}
        for j in items
    ]
    return hashlib.sha256(json.dumps(canonical, sort_keys=True).encode()).hexdigest()


def _same_request_or_conflict(existing_hash: str | None, request_hash: str) -> None:
    if existing_hash != request_hash:
        raise InputError(IDEMPOTENCY_FIELD, "this key was already used with a different request body", 409)


def _new_job(checked: CheckedJob, index: int | None = None) -> NewJob:
    return NewJob(task=checked.task, queue=queue_for_task(checked.task, WORKER_SETTINGS), params=checked.params,
                  image_sha256=checked.image.sha256, priority=checked.priority, ref=checked.ref, batch_index=index)


def _store_images(session: Session, *, tenant_id: uuid.UUID, items: list[CheckedJob]) -> None:
    for checked in {c.image.sha256: c for c in items}.values():
        store_image(session, tenant_id=tenant_id, image=checked.image)


def ring_safely(queue_counts: dict[str, int]) -> None:
    """Rings the workers; if the broker is down the jobs stay queued and the sweeper rings later."""
    try:
        ring_for_new_jobs(queue_counts)
    except Exception as exc:  # the ledger already holds the jobs: a lost doorbell is recovered by the sweeper
        log.warning("could not ring workers (%s); the sweeper will re-ring", exc)


@dataclass(frozen=True)
class Submitted:
    """What a submission produced, and whether it is new (202) or a replay of an earlier one (200)."""

    job: Job | None
    batch: Batch | None
    created: bool


def submit_job(session: Session, *, tenant_id: uuid.UUID, checked: CheckedJob, settings: ServiceSettings,
               idempotency_key: str | None) -> Submitted:
    """Stores the image and the queued job in one transaction, commits, then rings the task's queue."""
    request_hash = _fingerprint([checked])
    if idempotency_key and (existing := find_job_by_idempotency_key(session, tenant_id=tenant_id, key=idempotency_key)):
        _same_request_or_conflict(existing.request_hash, request_hash)
        return Submitted(job=existing, batch=None, created=False)
    try:
        _store_images(session, tenant_id=tenant_id, items=[checked])
        [job] = insert_jobs(session, tenant_id=tenant_id, jobs=[_new_job(checked)], max_attempts=settings.max_attempts,
                            idempotency_key=idempotency_key, request_hash=request_hash)
        session.commit()
    except IntegrityError:
        session.rollback()  # the same key raced in from a concurrent request
        existing = idempotency_key and find_job_by_idempotency_key(session, tenant_id=tenant_id, key=idempotency_key)
        if not existing:
            raise
        _same_request_or_conflict(existing.request_hash, request_hash)
        return Submitted(job=existing, batch=None, created=False)
    ring_safely({job.queue: 1})
    return Submitted(job=job, batch=None, created=True)


def submit_batch(session: Session, *, tenant_id: uuid.UUID, items: list[CheckedJob], settings: ServiceSettings,
                 idempotency_key: str | None) -> Submitted:
    """Stores the batch, its images and all its queued jobs in one transaction, commits, then rings."""
    request_hash = _fingerprint(items)
    if idempotency_key and (existing := find_batch_by_idempotency_key(session, tenant_id=tenant_id, key=idempotency_key)):
        _same_request_or_conflict(existing.request_hash, request_hash)
        return Submitted(job=None, batch=existing, created=False)
    try:
        _store_images(session, tenant_id=tenant_id, items=items)
        batch = insert_batch(session, tenant_id=tenant_id, total=len(items), idempotency_key=idempotency_key,
                             request_hash=request_hash)
        new_jobs = [_new_job(checked, index) for index, checked in enumerate(items)]
        insert_jobs(session, tenant_id=tenant_id, jobs=new_jobs, max_attempts=settings.max_attempts, batch_id=batch.id)
        session.commit()
    except IntegrityError:
        session.rollback()
        existing = idempotency_key and find_batch_by_idempotency_key(session, tenant_id=tenant_id, key=idempotency_key)
        if not existing:
            raise
        _same_request_or_conflict(existing.request_hash, request_hash)
        return Submitted(job=None, batch=existing, created=False)
    ring_safely(dict(Counter(job.queue for job in new_jobs)))
    return Submitted(job=None, batch=batch, created=True)

