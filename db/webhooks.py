"""The webhook outbox: events written with the change they report, claimed by deliverers, and the delivery log."""
from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db.models import Batch, Job, JobStatus, Tenant, WebhookDelivery, utcnow
from db.pages import newest_first
from db.session import is_postgres

PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"
DELIVERY_STATUSES = (PENDING, DELIVERED, FAILED)
BATCH_COMPLETED = "batch.completed"
SECRET_PREFIX = "whsec_"


# --- the tenant's signing secret ----------------------------------------------------------------

def new_webhook_secret() -> str:
    """A fresh signing secret: 256 random bits, URL-safe."""
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def ensure_webhook_secret(session: Session, *, tenant_id: uuid.UUID) -> tuple[str, bool]:
    """The tenant's signing secret, generated if it has none; returns it and whether it is new."""
    tenant = session.get(Tenant, tenant_id)
    if tenant.webhook_secret:
        return tenant.webhook_secret, False
    tenant.webhook_secret = new_webhook_secret()
    session.flush()
    return tenant.webhook_secret, True


def rotate_webhook_secret(session: Session, *, tenant_id: uuid.UUID) -> str:
    """Replaces the tenant's signing secret; every attempt from now on is signed with the new one."""
    tenant = session.get(Tenant, tenant_id)
    tenant.webhook_secret = new_webhook_secret()
    session.flush()
    return tenant.webhook_secret


# --- writing events (in the transaction of the change they report) ------------------------------

def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _job_data(job: Job) -> dict[str, Any]:
    return {
        "id": str(job.id), "status": job.status, "task": job.task, "ref": job.ref, "result": job.result,
        "error": job.error, "error_code": job.error_code, "model_version": job.model_version,
        "attempts": job.attempts, "created_at": _iso(job.created_at), "finished_at": _iso(job.finished_at),
    }


def _add_delivery(session: Session, *, tenant_id: uuid.UUID, event: str, subject_id: uuid.UUID, url: str,
                  data: dict[str, Any], now: datetime) -> None:
    delivery_id = uuid.uuid4()
    payload = {"id": str(delivery_id), "event": event, "created_at": now.isoformat(), "data": data}
    session.add(WebhookDelivery(id=delivery_id, tenant_id=tenant_id, event=event, subject_id=subject_id, url=url,
                                payload=payload, status=PENDING, attempts=0, next_attempt_at=now, attempt_log=[],
                                created_at=now))


def _batch_counts(session: Session, batch_id: uuid.UUID) -> dict[str, int]:
    rows = session.execute(select(Job.status, func.count()).where(Job.batch_id == batch_id).group_by(Job.status))
    counts = {status.value: 0 for status in JobStatus}
    counts.update({status: n for status, n in rows})
    return counts


def _record_batch_completed(session: Session, *, batch_id: uuid.UUID, now: datetime) -> int:
    """One batch.completed event when the batch's last job is final; 0 if it is not, or was already reported."""
    row = session.execute(select(Batch, Tenant.webhook_url).join(Tenant, Tenant.id == Batch.tenant_id)
                          .where(Batch.id == batch_id)).first()
    url = row and (row[0].callback_url or row[1])
    if not url:
        return 0
    batch = row[0]
    # Writers of a batch's last jobs queue here, so exactly one sees every job final (each statement after the
    # lock reads what the others committed); SQLite has a single writer and needs no lock.
    session.execute(select(Batch.id).where(Batch.id == batch_id).with_for_update())
    counts = _batch_counts(session, batch_id)
    if counts[JobStatus.queued.value] or counts[JobStatus.running.value]:
        return 0
    already = select(WebhookDelivery.id).where(WebhookDelivery.subject_id == batch_id,
                                               WebhookDelivery.event == BATCH_COMPLETED).limit(1)
    if session.scalar(already) is not None:
        return 0
    done = sum(counts.values())
    data = {"id": str(batch.id), "total": batch.total, "counts": counts, "done": done, "finished": True,
            "created_at": _iso(batch.created_at), "finished_at": now.isoformat(),
            "results_url": f"/v1/batches/{batch.id}/results"}
    _add_delivery(session, tenant_id=batch.tenant_id, event=BATCH_COMPLETED, subject_id=batch.id, url=url,
                  data=data, now=now)
    return 1


def record_final_events(session: Session, *, job_ids: Iterable[uuid.UUID], now: datetime | None = None) -> int:
    """Outbox rows for jobs that just became final: job.<status> for a job of its own, batch.completed for a
    batch whose last job this was (a batch's jobs send none of their own). Returns how many were written."""
    job_ids = list(job_ids)
    if not job_ids:
        return 0
    now = now or utcnow()
    stmt = (select(Job.id, Job.batch_id, Job.callback_url, Tenant.webhook_url)
            .join(Tenant, Tenant.id == Job.tenant_id).where(Job.id.in_(job_ids)))
    own_urls: dict[uuid.UUID, str] = {}
    batch_ids: set[uuid.UUID] = set()
    for job_id, batch_id, callback_url, tenant_url in session.execute(stmt):
        if batch_id is not None:
            batch_ids.add(batch_id)
        elif callback_url or tenant_url:
            own_urls[job_id] = callback_url or tenant_url
    written = 0
    if own_urls:  # full rows only for jobs that have somewhere to go: most jobs of most tenants have none
        # populate_existing: a job this session loaded before the change must be read as it is now.
        fresh = select(Job).where(Job.id.in_(list(own_urls))).execution_options(populate_existing=True)
        for job in session.scalars(fresh):
            _add_delivery(session, tenant_id=job.tenant_id, event=f"job.{job.status}", subject_id=job.id,
                          url=own_urls[job.id], data=_job_data(job), now=now)
            written += 1
    for batch_id in sorted(batch_ids):  # one lock order for every writer: no deadlock between two of them
        written += _record_batch_completed(session, batch_id=batch_id, now=now)
    session.flush()
    return written


# --- the deliverer's side ------------------------------------------------------------------------

@dataclass(frozen=True)
class DueDelivery:
    """A delivery a deliverer holds for one attempt: where to POST what, signed with which secret."""

    id: uuid.UUID
    event: str
    url: str
    payload: dict[str, Any]
    attempt: int
    secret: str


def claim_due_deliveries(session: Session, *, limit: int, lease_seconds: float,
                         now: datetime | None = None) -> list[DueDelivery]:
    """Takes up to `limit` due deliveries for one attempt each: the attempt is counted and the row is pushed
    `lease_seconds` ahead, so a deliverer that dies mid-POST leaves it due again then (at-least-once)."""
    now = now or utcnow()
    stmt = (select(WebhookDelivery)
            .where(WebhookDelivery.status == PENDING, WebhookDelivery.next_attempt_at <= now)
            .order_by(WebhookDelivery.next_attempt_at).limit(limit))
    if is_postgres(session):
        stmt = stmt.with_for_update(skip_locked=True)  # concurrent deliverers take disjoint rows
    rows = list(session.scalars(stmt))
    secrets_by_tenant: dict[uuid.UUID, str] = {}
    for row in rows:
        row.attempts += 1
        row.next_attempt_at = now + timedelta(seconds=lease_seconds)
        if row.tenant_id not in secrets_by_tenant:
            secrets_by_tenant[row.tenant_id] = ensure_webhook_secret(session, tenant_id=row.tenant_id)[0]
    session.flush()
    return [DueDelivery(id=row.id, event=row.event, url=row.url, payload=row.payload, attempt=row.attempts,
                        secret=secrets_by_tenant[row.tenant_id]) for row in rows]


def record_attempt(session: Session, *, delivery_id: uuid.UUID, attempt: int, entry: dict[str, Any], status: str,
                   next_attempt_at: datetime | None = None) -> bool:
    """Logs one attempt's outcome and the delivery's new status; False if the row moved on without us (our
    claim lapsed and another deliverer took it), in which case nothing is written."""
    row = session.get(WebhookDelivery, delivery_id, with_for_update=True)
    if row is None or row.status != PENDING or row.attempts != attempt:
        return False
    row.attempt_log = [*(row.attempt_log or []), entry]
    row.last_status_code, row.last_error = entry.get("status_code"), entry.get("error")
    row.status = status
    if status == DELIVERED:
        row.delivered_at = utcnow()
    if status == PENDING and next_attempt_at is not None:
        row.next_attempt_at = next_attempt_at
    session.flush()
    return True


def next_due_at(session: Session) -> datetime | None:
    """When the earliest pending delivery falls due (None: nothing pending)."""
    stmt = select(func.min(WebhookDelivery.next_attempt_at)).where(WebhookDelivery.status == PENDING)
    return session.scalar(stmt)


# --- the tenant's delivery log ----------------------------------------------------------------------

def list_deliveries(
    session: Session, *, tenant_id: uuid.UUID, limit: int, status: str | None = None,
    subject_id: uuid.UUID | None = None, event: str | None = None,
    after: tuple[datetime, uuid.UUID] | None = None,
) -> list[WebhookDelivery]:
    """The tenant's deliveries, newest first, after the (created_at, id) cursor; at most `limit`."""
    stmt = select(WebhookDelivery).where(WebhookDelivery.tenant_id == tenant_id)
    if status is not None:
        stmt = stmt.where(WebhookDelivery.status == status)
    if subject_id is not None:
        stmt = stmt.where(WebhookDelivery.subject_id == subject_id)
    if event is not None:
        stmt = stmt.where(WebhookDelivery.event == event)
    return list(session.scalars(newest_first(stmt, WebhookDelivery, after).limit(limit)))
