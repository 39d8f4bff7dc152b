"""Stores checked jobs and batches in one transaction, honours Idempotency-Key, then rings the workers."""
from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace

from fastapi.concurrency import run_in_threadpool
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from db.models import Batch, Job
from db.queries import (
    NewJob,
    count_active_jobs,
    find_batch_by_idempotency_key,
    find_job_by_idempotency_key,
    find_jobs_by_idempotency_keys,
    insert_batch,
    insert_jobs,
    insert_queued_jobs,
    lock_tenant_jobs,
    store_images,
)
from db.structured_logs import bind_log_context
from services.config import ServiceSettings
from services.deps import CurrentTenant, confirm_live_key
from services.errors import InputError
from services.input_checks import CheckedJob
from services.model_names import ModelResolver
from services.rate_limits import check_job_quota, quota_refusal
from services.schemas import JobPublic
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


def _ring_now(queue_counts: dict[str, int]) -> None:
    """Rings the workers; if the broker is down the jobs stay queued and the sweeper rings later."""
    try:
        ring_for_new_jobs(queue_counts)
    except Exception as exc:  # the ledger already holds the jobs: a lost doorbell is recovered by the sweeper
        log.warning("could not ring workers (%s); the sweeper will re-ring", exc)


# A ring wakes a worker that drains its queue, jobs committed after the ring included: rings closer together than
# this only add broker messages that find their jobs already claimed. Jobs committed within this long of the last
# ring are rung for together when it has passed; a lone job, with no ring lately, is rung for at once.
RING_INTERVAL_SECONDS = 0.01


class Doorbell:
    """Rings for committed jobs from one thread of its own, so no request waits on the broker (a send_task costs
    about 0.35 ms of CPU), at most once per `interval`. Jobs committed while a ring is on its way, or within the
    interval after it, are rung for together: ring_for_new_jobs rings each queue once per batch's worth of them, as
    it would for one batch of that size."""

    def __init__(self, interval: float = RING_INTERVAL_SECONDS):
        self.interval = interval
        self.pending: Counter[str] = Counter()
        self.changed = threading.Condition()
        self.thread: threading.Thread | None = None

    def ring(self, queue_counts: dict[str, int]) -> None:
        with self.changed:
            self.pending.update(queue_counts)
            if self.thread is None or not self.thread.is_alive():  # started in the process that rings (after fork)
                self.thread = threading.Thread(target=self._ring_forever, name="lensq-doorbell", daemon=True)
                self.thread.start()
            self.changed.notify()

    def _ring_forever(self) -> None:
        while True:
            with self.changed:
                self.changed.wait_for(lambda: self.pending)
                queue_counts, self.pending = dict(self.pending), Counter()
            _ring_now(queue_counts)
            time.sleep(self.interval)


DOORBELL = Doorbell()


def ring_safely(queue_counts: dict[str, int]) -> None:
    """Rings the workers for jobs already committed, soon and without waiting; a ring that is lost (the broker is
    down, the process ends first) leaves the jobs queued, and the sweeper re-rings them."""
    DOORBELL.ring(queue_counts)


@dataclass(frozen=True)
class Submitted:
    """What a submission produced, and whether it is new (202) or a replay of an earlier one (200)."""

    job: Job | None
    batch: Batch | None
    created: bool


def submit_job(session: Session, *, tenant_id: uuid.UUID, checked: CheckedJob, settings: ServiceSettings,
               idempotency_key: str | None, callback_url: str | None = None,
               quota_limit: int | None = None) -> Submitted:
    """Stores the image and the queued job in one transaction, commits, then rings the task's queue.

    With `quota_limit`, a new job (not a replay) is first checked against the tenant's quota (check_job_quota)."""
    request_hash = _fingerprint([checked], callback_url)
    if idempotency_key and (existing := find_job_by_idempotency_key(session, tenant_id=tenant_id, key=idempotency_key)):
        _same_request_or_conflict(existing.request_hash, request_hash)
        return Submitted(job=existing, batch=None, created=False)
    [version_id] = _versions_of(session, tenant_id=tenant_id, items=[checked], settings=settings)
    if quota_limit is not None:  # last before the writes: the tenant's lock is held from here to the commit
        check_job_quota(session, tenant_id=tenant_id, limit=quota_limit, new_jobs=1)
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
                 callback_url: str | None = None, quota_limit: int | None = None) -> Submitted:
    """Stores the batch, its images and all its queued jobs in one transaction, commits, then rings.

    `with_batch` writes rows that belong to the new batch (an OpenAI batch record) in the same transaction. With
    `quota_limit`, a new batch (not a replay) is first checked against the tenant's quota (check_job_quota)."""
    request_hash = _fingerprint(items, callback_url)
    if idempotency_key and (existing := find_batch_by_idempotency_key(session, tenant_id=tenant_id, key=idempotency_key)):
        _same_request_or_conflict(existing.request_hash, request_hash)
        return Submitted(job=None, batch=existing, created=False)
    version_ids = _versions_of(session, tenant_id=tenant_id, items=items, settings=settings)
    if quota_limit is not None:  # last before the writes: the tenant's lock is held from here to the commit
        check_job_quota(session, tenant_id=tenant_id, limit=quota_limit, new_jobs=len(items))
    try:
        _store_images(session, tenant_id=tenant_id, items=items)
        batch = insert_batch(session, tenant_id=tenant_id, total=len(items), idempotency_key=idempotency_key,
                             request_hash=request_hash, callback_url=callback_url)
        new_jobs = [_new_job(checked, index, version_id)
                    for index, (checked, version_id) in enumerate(zip(items, version_ids))]
        insert_queued_jobs(session, tenant_id=tenant_id, jobs=new_jobs, max_attempts=settings.max_attempts,
                           batch_id=batch.id)
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


# --- single jobs submitted at the same time, stored together ----------------------------------------

@dataclass(frozen=True)
class SingleJob:
    """One POST /v1/jobs, checked and waiting to be stored."""

    tenant: CurrentTenant  # as its key was looked up (perhaps from the key cache): confirmed when stored
    checked: CheckedJob
    callback_url: str | None
    idempotency_key: str | None = None


@dataclass(frozen=True)
class StoredJob:
    """A single job as stored: the answer's body, and what the request logs; not created when it is the replay
    of a job stored earlier under the same Idempotency-Key."""

    body: dict
    job_id: uuid.UUID
    task: str
    created: bool = True


def submit_jobs_together(session: Session, *, tenant_id: uuid.UUID, jobs: list[SingleJob],
                         settings: ServiceSettings) -> list[StoredJob | InputError]:
    """Stores one tenant's single jobs in one transaction, each as submit_job would (the replay of its
    Idempotency-Key, its model, the quota, in order), commits, then rings; returns each job's outcome: stored (or
    replayed), or refused with its own error. No two of `jobs` carry the same Idempotency-Key (SingleJobIntake
    holds a key's retry back for the next group, where it replays the first).

    The tenant's quota lock, its count of active jobs (which grows with the queue), the look-up of their keys and
    the commit are paid once for all of them instead of once each; under concurrent submissions of one tenant
    these were what limited it."""
    outcomes: list[StoredJob | InputError | None] = [None] * len(jobs)
    live = _live_tenants(session, [job.tenant for job in jobs], settings)
    # Held to the commit: the quota (as check_job_quota), and the keys, since every store of a keyed job that
    # counts against the quota takes it too, so no key can be stored between this look-up and the insert.
    lock_tenant_jobs(session, tenant_id=tenant_id)
    hashes = [_fingerprint([job.checked], job.callback_url) for job in jobs]
    replays = _replays(session, tenant_id=tenant_id, jobs=jobs, hashes=hashes)
    resolver = ModelResolver(session, tenant_id=tenant_id, settings=settings)
    wanted: list[tuple[int, NewJob]] = []
    for index, job in enumerate(jobs):
        if isinstance(live[job.tenant.key_id], InputError):  # its key was revoked since it was looked up
            outcomes[index] = live[job.tenant.key_id]
            continue
        if index in replays:
            outcomes[index] = replays[index]
            continue
        try:
            version_id = resolver.version_id(task=job.checked.task, model=job.checked.model,
                                             field=job.checked.model_field)
        except InputError as refusal:
            outcomes[index] = refusal
            continue
        new = _new_job(job.checked, None, version_id)
        wanted.append((index, replace(new, request_hash=hashes[index], callback_url=job.callback_url,
                                      idempotency_key=job.idempotency_key)))
    if not wanted:
        return outcomes
    active = count_active_jobs(session, tenant_id=tenant_id)
    accepted: list[tuple[int, NewJob]] = []
    for index, new in wanted:
        limit = live[jobs[index].tenant.key_id].max_active_jobs
        if active + len(accepted) + 1 > limit:
            outcomes[index] = quota_refusal(active + len(accepted), limit)
        else:
            accepted.append((index, new))
    if accepted:
        _store_images(session, tenant_id=tenant_id, items=[jobs[index].checked for index, _ in accepted])
        rows = insert_jobs(session, tenant_id=tenant_id, jobs=[new for _, new in accepted],
                           max_attempts=settings.max_attempts)
        for callback_url in {new.callback_url for _, new in accepted if new.callback_url}:
            secret_for_callbacks(session, tenant_id=tenant_id, callback_url=callback_url)
        for (index, _), row in zip(accepted, rows):  # while the session is open: `model` may read a version
            outcomes[index] = StoredJob(JobPublic.from_row(row).model_dump(mode="json"), row.id, row.task)
    session.commit()
    if accepted:
        ring_safely(dict(Counter(new.queue for _, new in accepted)))
    return outcomes


def _replays(session: Session, *, tenant_id: uuid.UUID, jobs: list[SingleJob],
             hashes: list[str]) -> dict[int, StoredJob | InputError]:
    """By index, each job whose Idempotency-Key is stored already: that job again, or a 409 if this request's body
    differs from the one stored under the key."""
    keyed = {job.idempotency_key: index for index, job in enumerate(jobs) if job.idempotency_key is not None}
    replays: dict[int, StoredJob | InputError] = {}
    for key, stored in find_jobs_by_idempotency_keys(session, tenant_id=tenant_id, keys=list(keyed)).items():
        index = keyed[key]
        try:
            _same_request_or_conflict(stored.request_hash, hashes[index])
        except InputError as conflict:
            replays[index] = conflict
            continue
        replays[index] = StoredJob(JobPublic.from_row(stored).model_dump(mode="json"), stored.id, stored.task,
                                   created=False)
    return replays


def _live_tenants(session: Session, tenants: list[CurrentTenant],
                  settings: ServiceSettings) -> dict[uuid.UUID, CurrentTenant | InputError]:
    """Each key's tenant as the ledger has it now (confirm_live_key), or its 401, by key id."""
    live: dict[uuid.UUID, CurrentTenant | InputError] = {}
    for tenant in tenants:
        if tenant.key_id not in live:
            try:
                live[tenant.key_id] = confirm_live_key(session, tenant, settings)
            except InputError as refusal:
                live[tenant.key_id] = refusal
    return live


class SingleJobIntake:
    """Gathers the single jobs this API process receives while it stores earlier ones, and stores each tenant's
    together (submit_jobs_together): one group at a time, in a worker thread. A job arriving when none is being
    stored is stored at once, alone: nothing waits for company."""

    def __init__(self, session_factory: Callable[[], Session], settings: ServiceSettings, max_group: int = 256):
        self.session_factory, self.settings, self.max_group = session_factory, settings, max_group
        self.waiting: list[tuple[SingleJob, asyncio.Future]] = []
        self.storing: asyncio.Task | None = None

    async def submit(self, job: SingleJob) -> StoredJob:
        """Stores the job with whichever others wait with it; raises its refusal (quota, model) or the group's
        error (the database)."""
        future = asyncio.get_running_loop().create_future()
        self.waiting.append((job, future))
        if self.storing is None or self.storing.done():
            self.storing = asyncio.create_task(self._store_while_waiting())
        return await future

    async def _store_while_waiting(self) -> None:
        while self.waiting:
            group, self.waiting = self._next_group()
            outcomes = await run_in_threadpool(self._store_group, [job for job, _ in group])
            for (_, future), outcome in zip(group, outcomes):
                if future.done():  # its client went away; the job is stored all the same
                    continue
                if isinstance(outcome, Exception):
                    future.set_exception(outcome)
                else:
                    future.set_result(outcome)

    def _next_group(self) -> tuple[list[tuple[SingleJob, asyncio.Future]], list[tuple[SingleJob, asyncio.Future]]]:
        """The jobs to store next, in arrival order, and those left waiting: beyond max_group, and each retry of an
        Idempotency-Key already in the group, which the next group answers as its replay (or its 409)."""
        group, left, keys = [], [], set()
        for waiting in self.waiting:
            job = waiting[0]
            key = None if job.idempotency_key is None else (job.tenant.id, job.idempotency_key)
            if len(group) < self.max_group and key not in keys:
                group.append(waiting)
                if key is not None:
                    keys.add(key)
            else:
                left.append(waiting)
        return group, left

    def _store_group(self, jobs: list[SingleJob]) -> list[StoredJob | Exception]:
        by_tenant: dict[uuid.UUID, list[int]] = {}
        for index, job in enumerate(jobs):
            by_tenant.setdefault(job.tenant.id, []).append(index)
        outcomes: list[StoredJob | Exception] = [None] * len(jobs)
        for tenant_id, indexes in by_tenant.items():  # one transaction per tenant: one quota lock at a time
            try:
                stored = self._store_together(tenant_id, [jobs[i] for i in indexes])
            except IntegrityError:
                # A key was stored between the look-up and the insert, by a store that did not take the tenant's
                # lock (none does today, on Postgres: each keyed store that counts against the quota takes it).
                # Rather than fail every job of the group, each goes again on its own, where that key replays.
                stored = [self._store_alone(jobs[i]) for i in indexes]
            except Exception as exc:  # this tenant's transaction failed (the database): its requests answer with it
                stored = [exc] * len(indexes)
            for index, outcome in zip(indexes, stored):
                outcomes[index] = outcome
        return outcomes

    def _store_together(self, tenant_id: uuid.UUID, jobs: list[SingleJob]) -> list[StoredJob | InputError]:
        with self.session_factory() as session:
            return submit_jobs_together(session, tenant_id=tenant_id, jobs=jobs, settings=self.settings)

    def _store_alone(self, job: SingleJob) -> StoredJob | Exception:
        outcome = self._outcome_alone(job)
        if isinstance(outcome, IntegrityError):  # its own key raced in: the look-up finds it now, and replays it
            outcome = self._outcome_alone(job)
        return outcome

    def _outcome_alone(self, job: SingleJob) -> StoredJob | Exception:
        try:
            [outcome] = self._store_together(job.tenant.id, [job])
            return outcome
        except Exception as exc:
            return exc
