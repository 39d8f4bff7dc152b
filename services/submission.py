"""Stores checked jobs and batches in one transaction, honours Idempotency-Key, then rings the workers."""
from __future__ import annotations

import hashlib
import json
import logging
import uuid
from collections import Counter
from collections.abc import Callable
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
    store_images,
)
from db.structured_logs import bind_log_context
from services.config import ServiceSettings
from services.errors import InputError
from services.input_checks import CheckedJob
from services.model_names import ModelResolver
from services.webhooks import secret_for_callbacks
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


def _fingerprint(items: list[CheckedJob], callback_url: str | None = None) -> str:
    """A hash of what was asked, so a retried request can be told from a different one under the same key."""
    canonical: list = [
        # `model` only when named, so requests naming none keep the hashes they always had
        {"task": j.task, "params": j.params, "priority": j.priority, "ref": j.ref, "image": j.image.sha256,
         **({"model": j.model} if j.model is not None else {})}
        for j in items
    ]
    if callback_url:  # only when given, so requests without one keep the hashes they always had
        canonical.append({"callback_url": callback_url})
    return hashlib.sha256(json.dumps(canonical, sort_keys=True).encode()).hexdigest()


def _same_request_or_conflict(existing_hash: str | None, request_hash: str) -> None:
    if existing_hash != request_hash:
        raise InputError(IDEMPOTENCY_FIELD, "this key was already used with a different request body", 409)


def _new_job(checked: CheckedJob, index: int | None = None, model_version_id: uuid.UUID | None = None) -> NewJob:
    return NewJob(task=checked.task, queue=queue_for_task(checked.task, WORKER_SETTINGS), params=checked.params,
                  image_sha256=checked.image.sha256, priority=checked.priority, ref=checked.ref, batch_index=index,
                  model_version_id=model_version_id)


def _versions_of(session: Session, *, tenant_id: uuid.UUID, items: list[CheckedJob],
                 settings: ServiceSettings) -> list[uuid.UUID | None]:
    """The version each job runs on: the one it names, else the tenant's default for its task (None: the base)."""
    resolver = ModelResolver(session, tenant_id=tenant_id, settings=settings)
    return [resolver.version_id(task=c.task, model=c.model, field=c.model_field) for c in items]


def _store_images(session: Session, *, tenant_id: uuid.UUID, items: list[CheckedJob]) -> None:
    store_images(session, tenant_id=tenant_id, images=list({c.image.sha256: c.image for c in items}.values()))


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
               idempotency_key: str | None, callback_url: str | None = None) -> Submitted:
    """Stores the image and the queued job in one transaction, commits, then rings the task's queue."""
    request_hash = _fingerprint([checked], callback_url)
    if idempotency_key and (existing := find_job_by_idempotency_key(session, tenant_id=tenant_id, key=idempotency_key)):
        _same_request_or_conflict(existing.request_hash, request_hash)
        return Submitted(job=existing, batch=None, created=False)
    [version_id] = _versions_of(session, tenant_id=tenant_id, items=[checked], settings=settings)
    try:
        _store_images(session, tenant_id=tenant_id, items=[checked])
        [job] = insert_jobs(session, tenant_id=tenant_id, jobs=[_new_job(checked, None, version_id)],
                            max_attempts=settings.max_attempts,
                            idempotency_key=idempotency_key, request_hash=request_hash, callback_url=callback_url)
        secret_for_callbacks(session, tenant_id=tenant_id, callback_url=callback_url)
        session.commit()
    except IntegrityError:
        session.rollback()  # the same key raced in from a concurrent request
        existing = idempotency_key and find_job_by_idempotency_key(session, tenant_id=tenant_id, key=idempotency_key)
        if not existing:
            raise
        _same_request_or_conflict(existing.request_hash, request_hash)
        return Submitted(job=existing, batch=None, created=False)
    bind_log_context(tenant_id=tenant_id, job_id=job.id)
    log.info("queued %s job", job.task)
    ring_safely({job.queue: 1})
    return Submitted(job=job, batch=None, created=True)


def submit_batch(session: Session, *, tenant_id: uuid.UUID, items: list[CheckedJob], settings: ServiceSettings,
                 idempotency_key: str | None, with_batch: Callable[[Session, Batch], None] | None = None,
                 callback_url: str | None = None) -> Submitted:
    """Stores the batch, its images and all its queued jobs in one transaction, commits, then rings.

    `with_batch` writes rows that belong to the new batch (an OpenAI batch record) in the same transaction."""
    request_hash = _fingerprint(items, callback_url)
    if idempotency_key and (existing := find_batch_by_idempotency_key(session, tenant_id=tenant_id, key=idempotency_key)):
        _same_request_or_conflict(existing.request_hash, request_hash)
        return Submitted(job=None, batch=existing, created=False)
    version_ids = _versions_of(session, tenant_id=tenant_id, items=items, settings=settings)
    try:
        _store_images(session, tenant_id=tenant_id, items=items)
        batch = insert_batch(session, tenant_id=tenant_id, total=len(items), idempotency_key=idempotency_key,
                             request_hash=request_hash, callback_url=callback_url)
        new_jobs = [_new_job(checked, index, version_id)
                    for index, (checked, version_id) in enumerate(zip(items, version_ids))]
        insert_jobs(session, tenant_id=tenant_id, jobs=new_jobs, max_attempts=settings.max_attempts, batch_id=batch.id)
        if with_batch is not None:
            with_batch(session, batch)
        secret_for_callbacks(session, tenant_id=tenant_id, callback_url=callback_url)
        session.commit()
    except IntegrityError:
        session.rollback()
        existing = idempotency_key and find_batch_by_idempotency_key(session, tenant_id=tenant_id, key=idempotency_key)
        if not existing:
            raise
        _same_request_or_conflict(existing.request_hash, request_hash)
        return Submitted(job=None, batch=existing, created=False)
    bind_log_context(tenant_id=tenant_id, batch_id=batch.id)
    log.info("queued batch of %d jobs", len(new_jobs))
    ring_safely(dict(Counter(job.queue for job in new_jobs)))
    return Submitted(job=None, batch=batch, created=True)

