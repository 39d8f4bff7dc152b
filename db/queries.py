"""The ledger's queries, keyword-only; callers own the transaction (see db.session.session_scope)."""
from __future__ import annotations

import functools
import hashlib
import hmac
import secrets
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import BigInteger, bindparam, case, func, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, joinedload, make_transient_to_detached

from db.bulk import COPY_MIN_ROWS, copy_rows, copy_rows_skipping_conflicts
from db.fine_tuning_runs import requeue_expired_fine_tuning
from db.models import FINAL_STATUSES, KEY_SCOPES, ApiKey, Batch, ErrorCode, Image, Job, JobStatus, Tenant, utcnow
from db.pages import newest_first
from db.session import is_postgres
from db.webhooks import record_final_events

API_KEY_PREFIX = "lq_"
DEFAULT_KEY_SCOPES = ("submit", "read")
ACTIVE_STATUSES = (JobStatus.queued.value, JobStatus.running.value)


# --- tenants and keys -------------------------------------------------------------------------

def hash_api_key(token: str) -> str:
    """The stored form of an API key: the hex sha256 of the token."""
    return hashlib.sha256(token.encode()).hexdigest()


def get_or_create_tenant(session: Session, *, name: str) -> Tenant:
    """The tenant called `name`, created if missing."""
    tenant = session.scalar(select(Tenant).where(Tenant.name == name))
    if tenant is None:
        tenant = Tenant(name=name)
        session.add(tenant)
        session.flush()
    return tenant


def scopes_text(scopes: Iterable[str]) -> str:
    """Scopes as stored: space-separated, in KEY_SCOPES order; ValueError on an unknown or missing scope."""
    wanted = set(scopes)
    unknown = wanted - set(KEY_SCOPES)
    if unknown or not wanted:
        raise ValueError(f"scopes must be a non-empty subset of {', '.join(KEY_SCOPES)}; got {sorted(wanted)}")
    return " ".join(scope for scope in KEY_SCOPES if scope in wanted)


def create_api_key(
    session: Session, *, tenant_id: uuid.UUID, name: str = "", scopes: Iterable[str] = DEFAULT_KEY_SCOPES,
    rate_limit_per_minute: int | None = None,
) -> tuple[ApiKey, str]:
    """A new key for the tenant; returns the row and the token, which is shown once and never stored."""
    token = API_KEY_PREFIX + secrets.token_urlsafe(32)
    key = ApiKey(tenant_id=tenant_id, name=name, prefix=token[: len(API_KEY_PREFIX) + 8], key_hash=hash_api_key(token),
                 scopes=scopes_text(scopes), rate_limit_per_minute=rate_limit_per_minute)
    session.add(key)
    session.flush()
    return key, token


def find_live_api_key(session: Session, *, token: str) -> ApiKey | None:
    """The live (not revoked) key of this token, with its tenant loaded; None for any other token."""
    token_hash = hash_api_key(token)
    stmt = (
        select(ApiKey)
        .options(joinedload(ApiKey.tenant))
        .where(ApiKey.key_hash == token_hash, ApiKey.revoked_at.is_(None))
    )
    key = session.scalar(stmt)
    # The index finds the row; the final word is a constant-time comparison of the stored hash.
    if key is None or not hmac.compare_digest(key.key_hash, token_hash):
        return None
    return key


def tenant_for_api_key(session: Session, *, token: str) -> Tenant | None:
    """The tenant owning a live (not revoked) key, or None."""
    key = find_live_api_key(session, token=token)
    return key.tenant if key is not None else None


def list_api_keys(session: Session, *, tenant_name: str | None = None) -> list[tuple[ApiKey, str]]:
    """Keys with their tenant's name, oldest first, optionally for one tenant."""
    stmt = select(ApiKey, Tenant.name).join(Tenant).order_by(ApiKey.created_at)
    if tenant_name is not None:
        stmt = stmt.where(Tenant.name == tenant_name)
    return [(key, tenant) for key, tenant in session.execute(stmt).all()]


def revoke_api_key(session: Session, *, prefix_or_id: str) -> int:
    """Revokes the live keys whose prefix or id matches; returns how many."""
    condition = ApiKey.prefix == prefix_or_id
    try:
        condition = or_(condition, ApiKey.id == uuid.UUID(prefix_or_id))
    except ValueError:
        pass
    stmt = update(ApiKey).where(condition, ApiKey.revoked_at.is_(None)).values(revoked_at=utcnow())
    return session.execute(stmt).rowcount


def tenant_api_keys(session: Session, *, tenant_id: uuid.UUID) -> list[ApiKey]:
    """The tenant's keys, live and revoked, oldest first."""
    return list(session.scalars(select(ApiKey).where(ApiKey.tenant_id == tenant_id).order_by(ApiKey.created_at)))


def get_api_key(session: Session, *, tenant_id: uuid.UUID, key_id: uuid.UUID) -> ApiKey | None:
    """The tenant's key, or None (another tenant's key is None too)."""
    return session.scalar(select(ApiKey).where(ApiKey.id == key_id, ApiKey.tenant_id == tenant_id))


def revoke_tenant_key(session: Session, *, tenant_id: uuid.UUID, key_id: uuid.UUID) -> ApiKey | None:
    """Revokes one of the tenant's keys (a revoked key keeps its first revocation time); None if there is none."""
    key = get_api_key(session, tenant_id=tenant_id, key_id=key_id)
    if key is not None and key.revoked_at is None:
        key.revoked_at = utcnow()
        session.flush()
    return key


def get_tenant(session: Session, *, tenant_id: uuid.UUID) -> Tenant | None:
    """The tenant with this id, or None."""
    return session.get(Tenant, tenant_id)


# Statements every single submission runs are built once, with their values as parameters: assembling one costs
# about as much as running it (0.2-0.3 ms each, against a 0.15 ms round trip to a local Postgres).
@functools.cache
def _tenant_lock_statement():
    return select(func.pg_advisory_xact_lock(bindparam("lock_key", type_=BigInteger)))


@functools.cache
def _count_active_statement():
    return (select(func.count()).select_from(Job)
            .where(Job.tenant_id == bindparam("active_tenant"), Job.status.in_(ACTIVE_STATUSES)))


def lock_tenant_jobs(session: Session, *, tenant_id: uuid.UUID) -> None:
    """Serializes job quota checks of one tenant until this transaction ends (SQLite: BEGIN IMMEDIATE does it)."""
    if is_postgres(session):
        # The lock's key is a bigint: the id's top 63 bits keep it positive and distinct per tenant.
        session.execute(_tenant_lock_statement(), {"lock_key": tenant_id.int >> 65})


def count_active_jobs(session: Session, *, tenant_id: uuid.UUID) -> int:
    """How many of the tenant's jobs are queued or running."""
    return session.scalar(_count_active_statement(), {"active_tenant": tenant_id})


# --- images -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class ImageFacts:
    """A checked image: its bytes and what they are."""

    data: bytes
    sha256: str
    format: str
    width: int
    height: int


def store_image(session: Session, *, tenant_id: uuid.UUID, image: ImageFacts) -> None:
    """Stores the image unless the tenant already has these bytes (content-addressed)."""
    store_images(session, tenant_id=tenant_id, images=[image])


def store_images(session: Session, *, tenant_id: uuid.UUID, images: list[ImageFacts]) -> None:
    """Stores many images at once, skipping those the tenant already has (content-addressed)."""
    if not images:
        return
    now = utcnow()
    rows = [{"tenant_id": tenant_id, "sha256": i.sha256, "data": i.data, "format": i.format, "width": i.width,
             "height": i.height, "size_bytes": len(i.data), "created_at": now} for i in images]
    if is_postgres(session) and len(rows) >= COPY_MIN_ROWS:
        columns = list(rows[0])
        copy_rows_skipping_conflicts(session, Image.__table__, columns, [list(row.values()) for row in rows],
                                     conflict="(tenant_id, sha256)")
        return
    upsert = postgresql.insert if is_postgres(session) else sqlite.insert  # both have ON CONFLICT DO NOTHING
    session.execute(upsert(Image.__table__).on_conflict_do_nothing(index_elements=["tenant_id", "sha256"]), rows)


# --- submitting and reading jobs ----------------------------------------------------------------

@dataclass(frozen=True)
class NewJob:
    """What the API hands the ledger for one job."""

    task: str
    queue: str
    params: dict[str, Any]
    image_sha256: str
    priority: int = 0
    ref: str | None = None
    batch_index: int | None = None
    model_version_id: uuid.UUID | None = None  # the tenant's version it runs on; None: the base model
    # Its own request hash, callback URL and Idempotency-Key, when jobs stored together differ in them (else the
    # insert's)
    request_hash: str | None = None
    callback_url: str | None = None
    idempotency_key: str | None = None


def insert_queued_jobs(
    session: Session, *, tenant_id: uuid.UUID, jobs: list[NewJob], max_attempts: int,
    batch_id: uuid.UUID | None = None, idempotency_key: str | None = None, request_hash: str | None = None,
    callback_url: str | None = None,
) -> list[dict[str, Any]]:
    """Inserts queued jobs in one statement, without ORM objects (the key, hash and callback URL apply to each job
    that has none of its own; a key to one job only); returns each job's row as inserted, every column given."""
    now = utcnow()
    shared = {
        "tenant_id": tenant_id, "batch_id": batch_id, "max_attempts": max_attempts,
        "status": JobStatus.queued.value, "attempts": 0, "created_at": now, "updated_at": now, "queued_at": now, "rung_at": now, "lease_owner": None, "lease_token": None,
        "lease_expires_at": None, "result": None, "error": None, "error_code": None, "model_version": None,
        "started_at": None, "finished_at": None,
    }
    per_row = {
        "id": [uuid.uuid4() for _ in jobs], "batch_index": [new.batch_index for new in jobs],
        "ref": [new.ref for new in jobs], "task": [new.task for new in jobs], "queue": [new.queue for new in jobs],
        "params": [new.params for new in jobs], "image_sha256": [new.image_sha256 for new in jobs],
        "priority": [new.priority for new in jobs], "model_version_id": [new.model_version_id for new in jobs],
        "request_hash": [request_hash if new.request_hash is None else new.request_hash for new in jobs],
        "callback_url": [callback_url if new.callback_url is None else new.callback_url for new in jobs],
        "idempotency_key": [idempotency_key if new.idempotency_key is None else new.idempotency_key for new in jobs],
    }
    rows = [{**shared, **dict(zip(per_row, values))} for values in zip(*per_row.values())]
    if not rows:
        return rows
    if is_postgres(session):
        # Columns that are NULL in every new job are left to the table's default (NULL) rather than sent.
        columns = [name for name in rows[0] if name in per_row or shared[name] is not None]
        copy_rows(session, Job.__table__, columns, [[row[name] for name in columns] for row in rows])
    else:
        session.execute(insert(Job.__table__), rows)
    return rows


def insert_jobs(
    session: Session, *, tenant_id: uuid.UUID, jobs: list[NewJob], max_attempts: int,
    batch_id: uuid.UUID | None = None, idempotency_key: str | None = None, request_hash: str | None = None,
    callback_url: str | None = None,
) -> list[Job]:
    """Inserts queued jobs (the key, hash and callback URL apply to a single job) and returns them as ORM rows."""
    rows = insert_queued_jobs(session, tenant_id=tenant_id, jobs=jobs, max_attempts=max_attempts, batch_id=batch_id,
                              idempotency_key=idempotency_key, request_hash=request_hash, callback_url=callback_url)
    # Every column is known, so the rows join the session as loaded from the table: no flush, no read back.
    loaded = [Job(**row) for row in rows]
    for job in loaded:
        make_transient_to_detached(job)
        session.add(job)
    return loaded


def find_jobs_by_idempotency_keys(session: Session, *, tenant_id: uuid.UUID, keys: list[str]) -> dict[str, Job]:
    """The tenant's jobs stored under any of these Idempotency-Keys, by key."""
    if not keys:
        return {}
    found = session.scalars(select(Job).where(Job.tenant_id == tenant_id, Job.idempotency_key.in_(keys)))
    return {job.idempotency_key: job for job in found}


def find_job_by_idempotency_key(session: Session, *, tenant_id: uuid.UUID, key: str) -> Job | None:
    """The tenant's job submitted with this Idempotency-Key, if any."""
    return find_jobs_by_idempotency_keys(session, tenant_id=tenant_id, keys=[key]).get(key)


def get_job(session: Session, *, tenant_id: uuid.UUID, job_id: uuid.UUID) -> Job | None:
    """The tenant's job, or None (another tenant's job is None too)."""
    return session.scalar(select(Job).where(Job.id == job_id, Job.tenant_id == tenant_id))


def get_jobs(session: Session, *, tenant_id: uuid.UUID, job_ids: Iterable[uuid.UUID]) -> list[Job]:
    """The tenant's jobs among `job_ids` (any order; ids of other tenants are left out)."""
    return list(session.scalars(select(Job).where(Job.id.in_(list(job_ids)), Job.tenant_id == tenant_id)))


def list_jobs(
    session: Session, *, tenant_id: uuid.UUID, limit: int, status: str | None = None, task: str | None = None,
    batch_id: uuid.UUID | None = None, after: tuple[datetime, uuid.UUID] | None = None,
    error_code: str | None = None,
) -> list[Job]:
    """The tenant's jobs, newest first, after the (created_at, id) cursor; at most `limit`."""
    stmt = select(Job).where(Job.tenant_id == tenant_id)
    if status is not None:
        stmt = stmt.where(Job.status == status)
    if error_code is not None:
        stmt = stmt.where(Job.error_code == error_code)
    if task is not None:
        stmt = stmt.where(Job.task == task)
    if batch_id is not None:
        stmt = stmt.where(Job.batch_id == batch_id)
    return list(session.scalars(newest_first(stmt, Job, after).limit(limit)))


def cancel_job(session: Session, *, tenant_id: uuid.UUID, job_id: uuid.UUID) -> Job | None:
    """Cancels a queued or running job (a running one's result is then discarded); returns the job."""
    now = utcnow()
    cancelled = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.tenant_id == tenant_id, Job.status.in_([JobStatus.queued, JobStatus.running]))
        .values(status=JobStatus.cancelled.value, finished_at=now, updated_at=now, lease_expires_at=None)
    )
    if cancelled.rowcount:  # its webhook event commits with the cancellation, or not at all
        record_final_events(session, job_ids=[job_id], now=now)
    session.expire_all()
    return get_job(session, tenant_id=tenant_id, job_id=job_id)


# --- batches ------------------------------------------------------------------------------------

def insert_batch(
    session: Session, *, tenant_id: uuid.UUID, total: int, idempotency_key: str | None = None,
    request_hash: str | None = None, callback_url: str | None = None,
) -> Batch:
    """A new batch row (its jobs are inserted with insert_jobs)."""
    batch = Batch(tenant_id=tenant_id, total=total, idempotency_key=idempotency_key, request_hash=request_hash,
                  callback_url=callback_url)
    session.add(batch)
    session.flush()
    return batch


def find_batch_by_idempotency_key(session: Session, *, tenant_id: uuid.UUID, key: str) -> Batch | None:
    """The tenant's batch submitted with this Idempotency-Key, if any."""
    return session.scalar(select(Batch).where(Batch.tenant_id == tenant_id, Batch.idempotency_key == key))


def get_batch(session: Session, *, tenant_id: uuid.UUID, batch_id: uuid.UUID) -> Batch | None:
    """The tenant's batch, or None."""
    return session.scalar(select(Batch).where(Batch.id == batch_id, Batch.tenant_id == tenant_id))


def batch_counts(session: Session, *, batch_id: uuid.UUID) -> dict[str, int]:
    """How many of the batch's jobs are in each status (every status present, zeros included)."""
    rows = session.execute(select(Job.status, func.count()).where(Job.batch_id == batch_id).group_by(Job.status))
    counts = {status.value: 0 for status in JobStatus}
    counts.update({status: n for status, n in rows})
    return counts


def batch_jobs(session: Session, *, batch_id: uuid.UUID) -> list[Job]:
    """The batch's jobs in submission order."""
    return list(session.scalars(select(Job).where(Job.batch_id == batch_id).order_by(Job.batch_index)))


# --- the worker's side: claim, lease, write ---------------------------------------------------

@dataclass(frozen=True)
class ClaimedJob:
    """A job a worker holds a lease on, with the image bytes it needs."""

    id: uuid.UUID
    task: str
    params: dict[str, Any]
    image_data: bytes
    image_sha256: str
    attempts: int = 1  # this claim's try: above 1, a re-execution after a lost lease
    model_version_id: uuid.UUID | None = None  # the tenant's version to run it on; None: the worker's base model


@dataclass(frozen=True)
class Claim:
    """What claim_batch hands a worker: its lease token and the jobs it now holds."""

    lease_token: str
    jobs: list[ClaimedJob] = field(default_factory=list)


# Highest priority first, then oldest, then a batch's own order.
CLAIM_ORDER = (Job.priority.desc(), Job.created_at, Job.batch_index, Job.id)


def _queued_to_claim(queue: Any, limit: Any):
    """The queue's next `limit` queued jobs, in claim order (values, or bound parameters for a prebuilt statement)."""
    return (select(Job.id).where(Job.queue == queue, Job.status == JobStatus.queued.value)
            .order_by(*CLAIM_ORDER).limit(limit))


# Besides these a claim counts one more attempt (attempts + 1, computed by the database).
LEASE_COLUMNS = ("status", "lease_owner", "lease_token", "lease_expires_at", "started_at", "updated_at")


def _lease_values(claim: Claim, worker_id: str, lease_seconds: float) -> dict[str, Any]:
    """The LEASE_COLUMNS a claim sets on each job it takes."""
    now = utcnow()
    return {"status": JobStatus.running.value, "lease_owner": worker_id, "lease_token": claim.lease_token,
            "lease_expires_at": now + timedelta(seconds=lease_seconds), "started_at": now, "updated_at": now}


CLAIMED_COLUMNS = (Job.id, Job.task, Job.params, Job.image_sha256, Job.attempts, Job.model_version_id)


def _claimed_job(row) -> ClaimedJob:
    return ClaimedJob(id=row.id, task=row.task, params=row.params or {}, image_sha256=row.image_sha256,
                      image_data=row.data, attempts=row.attempts, model_version_id=row.model_version_id)


@functools.cache
def _claim_statement():
    """Postgres: pick (FOR UPDATE SKIP LOCKED: concurrent workers take disjoint rows), lease and read the jobs with
    their images in one statement, one round trip instead of three. Built once, on the tables rather than the ORM
    classes (the ORM would fill in the lease's values itself): putting its CTEs together costs more than running it.
    No parameter is named after a column of jobs: in a statement holding an UPDATE, that name would SET the column."""
    jobs, images = Job.__table__, Image.__table__
    picked = (_queued_to_claim(bindparam("claim_queue"), bindparam("claim_limit"))
              .with_for_update(skip_locked=True).cte("picked"))
    leased = (update(jobs).where(jobs.c.id.in_(select(picked.c.id)))
              .values({name: bindparam(f"b_{name}", type_=jobs.c[name].type) for name in LEASE_COLUMNS}
                      | {"attempts": jobs.c.attempts + 1})
              .returning(*(jobs.c[column.key] for column in CLAIMED_COLUMNS), jobs.c.tenant_id, jobs.c.priority,
                         jobs.c.created_at, jobs.c.batch_index)
              .cte("leased"))
    return (select(*(leased.c[column.key] for column in CLAIMED_COLUMNS), images.c.data)
            .join(images, (images.c.tenant_id == leased.c.tenant_id) & (images.c.sha256 == leased.c.image_sha256))
            .order_by(leased.c.priority.desc(), leased.c.created_at, leased.c.batch_index, leased.c.id))


def claim_batch(session: Session, *, queue: str, worker_id: str, limit: int, lease_seconds: float) -> Claim:
    """Leases up to `limit` queued jobs of `queue` to the worker, highest priority then oldest first."""
    claim = Claim(lease_token=secrets.token_hex(16))
    if is_postgres(session):
        lease = _lease_values(claim, worker_id, lease_seconds)
        rows = session.execute(_claim_statement(), {"claim_queue": queue, "claim_limit": limit,
                                                    **{f"b_{name}": value for name, value in lease.items()}})
        claim.jobs.extend(_claimed_job(row) for row in rows)
        return claim
    # SQLite: the transaction began with BEGIN IMMEDIATE (db.session), so this worker is the only writer.
    ids = list(session.scalars(_queued_to_claim(queue, limit)))
    if not ids:
        return claim
    session.execute(update(Job).where(Job.id.in_(ids))
                    .values(_lease_values(claim, worker_id, lease_seconds) | {"attempts": Job.attempts + 1}))
    rows = session.execute(
        select(*CLAIMED_COLUMNS, Image.data)
        .join(Image, (Image.tenant_id == Job.tenant_id) & (Image.sha256 == Job.image_sha256))
        .where(Job.id.in_(ids))
        .order_by(*CLAIM_ORDER)
    )
    claim.jobs.extend(_claimed_job(row) for row in rows)
    return claim


def extend_leases(session: Session, *, lease_token: str, lease_seconds: float) -> int:
    """Pushes back the expiry of every job still held under this lease; returns how many."""
    now = utcnow()
    stmt = (
        update(Job)
        .where(Job.lease_token == lease_token, Job.status == JobStatus.running.value)
        .values(lease_expires_at=now + timedelta(seconds=lease_seconds))
    )
    return session.execute(stmt).rowcount


def hand_back_claim(session: Session, *, lease_token: str) -> int:
    """Returns a claimed batch that never ran to the queue, as if it had not been claimed; returns how many jobs."""
    # attempts goes back down: the claim is undone, not counted as a lost attempt (a job's first claim had set
    # started_at, which a never-started job does not show).
    stmt = (
        update(Job)
        .where(Job.lease_token == lease_token, Job.status == JobStatus.running.value)
        .values(status=JobStatus.queued.value, lease_owner=None, lease_token=None, lease_expires_at=None,
                attempts=Job.attempts - 1, started_at=case((Job.attempts == 1, None), else_=Job.started_at),
                updated_at=utcnow())
    )
    return session.execute(stmt).rowcount


@dataclass(frozen=True)
class JobOutcome:
    """The end of one job as a worker saw it: a result, or an error with its ErrorCode."""

    job_id: uuid.UUID
    result: dict[str, Any] | None = None
    error: str | None = None
    model_version: str | None = None
    error_code: str | None = None


def _error_code(outcome: JobOutcome) -> str | None:
    """The outcome's error code; an error nobody classified counts as the model's."""
    if outcome.error is None:
        return None
    return outcome.error_code or ErrorCode.model.value


def _final_values(outcome: JobOutcome, now: datetime) -> dict[str, Any]:
    """The columns a job's outcome sets."""
    status = JobStatus.failed if outcome.error is not None else JobStatus.succeeded
    return {"status": status.value, "result": outcome.result, "error": outcome.error,
            "error_code": _error_code(outcome), "model_version": outcome.model_version, "finished_at": now,
            "updated_at": now, "lease_expires_at": None}


def _write_one_by_one(session: Session, *, lease_token: str, outcomes: list[JobOutcome],
                      now: datetime) -> list[uuid.UUID]:
    """One guarded UPDATE per outcome: its rowcount says whether the job was still running under this lease."""
    written: list[uuid.UUID] = []
    for outcome in outcomes:
        stmt = (
            update(Job)
            .where(Job.id == outcome.job_id, Job.lease_token == lease_token, Job.status == JobStatus.running.value)
            .values(**_final_values(outcome, now))
        )
        if session.execute(stmt).rowcount:
            written.append(outcome.job_id)
    return written


def _write_locked(session: Session, *, lease_token: str, outcomes: list[JobOutcome],
                  now: datetime) -> list[uuid.UUID]:
    """Locks the jobs still running under this lease (a cancel then waits for this transaction), then updates them
    in one executemany: two round trips for the batch instead of one per job."""
    held = set(session.scalars(
        select(Job.id).where(Job.id.in_([o.job_id for o in outcomes]), Job.lease_token == lease_token,
                             Job.status == JobStatus.running.value).with_for_update()
    ))
    written = [o for o in outcomes if o.job_id in held]
    if written:
        table = Job.__table__
        finals = [_final_values(o, now) for o in written]
        # Parameter names differ from the column names, which SQLAlchemy reserves for the SET clause.
        values = {name: bindparam(f"b_{name}", type_=table.c[name].type) for name in finals[0]}
        rows = [{"b_id": o.job_id, **{f"b_{k}": v for k, v in final.items()}} for o, final in zip(written, finals)]
        session.execute(update(table).where(table.c.id == bindparam("b_id")).values(values), rows)
    return [o.job_id for o in written]


def write_results(session: Session, *, lease_token: str, outcomes: list[JobOutcome]) -> int:
    """Writes outcomes only for jobs still running under this lease, with their webhook events; returns how many
    were written."""
    now = utcnow()
    # SQLite has no row locks (FOR UPDATE is ignored), so there each write is guarded by its own WHERE.
    write = _write_locked if is_postgres(session) else _write_one_by_one
    written = write(session, lease_token=lease_token, outcomes=outcomes, now=now)
    # In this transaction: an event is sent only for a committed result, and every committed result has its event.
    record_final_events(session, job_ids=written, now=now)
    return len(written)


# --- the sweeper's side -----------------------------------------------------------------------

@dataclass(frozen=True)
class SweepReport:
    """What one sweep did: jobs re-queued per queue, and jobs failed after max_attempts."""

    requeued: dict[str, int]
    failed: int


def requeue_expired(session: Session, *, now: datetime | None = None) -> SweepReport:
    """Jobs whose lease expired (their worker died) go back to queued, or fail after max_attempts."""
    now = now or utcnow()
    stmt = select(Job).where(Job.status == JobStatus.running.value, Job.lease_expires_at < now)
    if is_postgres(session):
        stmt = stmt.with_for_update(skip_locked=True)
    requeued: Counter[str] = Counter()
    failed: list[uuid.UUID] = []
    for job in session.scalars(stmt):
        job.lease_expires_at = None
        job.lease_token = None
        job.updated_at = now
        if job.attempts >= job.max_attempts:
            job.status, job.finished_at, job.error_code = JobStatus.failed.value, now, ErrorCode.dead.value
            job.error = (f"dead: its worker was lost (the lease expired) on every attempt "
                         f"({job.attempts} of {job.max_attempts}); not retried again")
            failed.append(job.id)
        else:
            job.status, job.queued_at, job.rung_at = JobStatus.queued.value, now, now
            requeued[job.queue] += 1
    session.flush()
    record_final_events(session, job_ids=failed, now=now)
    # Fine-tuning jobs are leased the same way: re-queued ones resume from their last checkpoint.
    tuning_requeued, tuning_failed = requeue_expired_fine_tuning(session, now=now)
    requeued.update(tuning_requeued)
    return SweepReport(requeued=dict(requeued), failed=len(failed) + tuning_failed)


def queues_to_rering(session: Session, *, queues: list[str], stale_seconds: float,
                     now: datetime | None = None) -> list[str]:
    """Those of `queues` holding queued jobs not rung for `stale_seconds` (a lost message); marks them rung now."""
    now = now or utcnow()
    stale = (
        (Job.status == JobStatus.queued.value)
        & Job.queue.in_(queues)
        & (Job.rung_at < now - timedelta(seconds=stale_seconds))
    )
    queues = sorted(session.scalars(select(Job.queue).where(stale).distinct()))
    if queues:
        session.execute(update(Job).where(stale, Job.queue.in_(queues)).values(rung_at=now))
    return queues


def queue_has_work(session: Session, *, queue: str) -> bool:
    """Whether any job of the queue is waiting."""
    stmt = select(Job.id).where(Job.queue == queue, Job.status == JobStatus.queued.value).limit(1)
    return session.scalar(stmt) is not None


@dataclass(frozen=True)
class QueueDepth:
    """How many jobs of a queue are waiting (counted up to a limit) and when the newest of those was queued."""

    waiting: int
    newest_queued_at: datetime | None  # None when none is waiting


@functools.cache
def _count_queued_statement():
    """Built once with its values as parameters: the worker counts before every claim, on the path of a lone job."""
    waiting = (select(Job.queued_at)
               .where(Job.queue == bindparam("count_queue"), Job.status == JobStatus.queued.value)
               .limit(bindparam("count_limit")).subquery())
    return select(func.count(), func.max(waiting.c.queued_at)).select_from(waiting)


def count_queued(session: Session, *, queue: str, limit: int) -> QueueDepth:
    """How many jobs of the queue are waiting, counted up to `limit` (the count stops there: cheap on a long queue),
    and the newest one's queued_at among those counted (the queue's newest whenever fewer than `limit` wait)."""
    count, newest = session.execute(_count_queued_statement(), {"count_queue": queue, "count_limit": limit}).one()
    return QueueDepth(waiting=count, newest_queued_at=newest)


def is_final(status: str) -> bool:
    """Whether a job in this status is done for good."""
    return status in {s.value for s in FINAL_STATUSES}


# --- the web page's reads (services/ui) ---------------------------------------------------------

@functools.cache
def _live_key_by_id_statement():
    return (select(ApiKey).options(joinedload(ApiKey.tenant))
            .where(ApiKey.id == bindparam("live_key_id"), ApiKey.revoked_at.is_(None)))


def find_live_api_key_by_id(session: Session, *, key_id: uuid.UUID) -> ApiKey | None:
    """The live (not revoked) key with this id, with its tenant loaded; None if revoked or missing."""
    return session.scalar(_live_key_by_id_statement(), {"live_key_id": key_id})


def get_image(session: Session, *, tenant_id: uuid.UUID, sha256: str) -> Image | None:
    """The tenant's stored image with this sha256, or None (another tenant's is None too)."""
    return session.get(Image, (tenant_id, sha256))


def list_batches(session: Session, *, tenant_id: uuid.UUID, limit: int) -> list[tuple[Batch, dict[str, int]]]:
    """The tenant's newest batches with their counts per status (one grouped query for all of them)."""
    batches = list(session.scalars(select(Batch).where(Batch.tenant_id == tenant_id)
                                   .order_by(Batch.created_at.desc(), Batch.id.desc()).limit(limit)))
    counts = {batch.id: {status.value: 0 for status in JobStatus} for batch in batches}
    if batches:
        rows = session.execute(select(Job.batch_id, Job.status, func.count())
                               .where(Job.batch_id.in_(list(counts))).group_by(Job.batch_id, Job.status))
        for batch_id, status, n in rows:
            counts[batch_id][status] = n
    return [(batch, counts[batch.id]) for batch in batches]


def jobs_updated_since(session: Session, *, tenant_id: uuid.UUID, since: datetime | None, limit: int,
                       batch_id: uuid.UUID | None = None) -> list[Job]:
    """The tenant's jobs changed at or after `since`, oldest change first; with no `since`, its newest `limit`."""
    stmt = select(Job).where(Job.tenant_id == tenant_id)
    if batch_id is not None:
        stmt = stmt.where(Job.batch_id == batch_id)
    if since is None:
        newest = stmt.order_by(Job.updated_at.desc(), Job.id.desc()).limit(limit)
        return list(reversed(list(session.scalars(newest))))
    return list(session.scalars(stmt.where(Job.updated_at >= since).order_by(Job.updated_at, Job.id).limit(limit)))
