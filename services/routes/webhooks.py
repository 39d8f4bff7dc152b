"""/v1/webhooks/deliveries: the tenant's webhook delivery log; /v1/tenant/webhook-secret: a new signing secret."""
from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from db.models import WebhookDelivery
from db.webhooks import list_deliveries, rotate_webhook_secret
from services.deps import ACCESS_ERRORS, AdminTenant, ReadTenant, SessionDep, SettingsDep
from services.routes.jobs import decode_cursor, encode_cursor
from services.schemas import example_response

router = APIRouter(tags=["webhooks"], responses=ACCESS_ERRORS)

DeliveryStatus = Literal["pending", "delivered", "failed"]
DELIVERY_EXAMPLE = {
    "id": "0b7f6a3e-9a51-4c3e-8f43-3c1f0a2f5b10", "event": "job.succeeded",
    "subject_id": "3b241101-e2bb-4255-8caf-4136c566a962", "url": "https://hooks.example.com/lensq",
    "status": "delivered", "attempts": 2, "last_status_code": 200, "last_error": None,
    "attempt_log": [
        {"attempt": 1, "at": "2026-01-01T12:00:02Z", "status_code": 500, "error": "answered HTTP 500",
         "duration_ms": 41},
        {"attempt": 2, "at": "2026-01-01T12:00:07Z", "status_code": 200, "error": None, "duration_ms": 35},
    ],
    "next_attempt_at": None, "created_at": "2026-01-01T12:00:02Z", "delivered_at": "2026-01-01T12:00:07Z",
    "payload": {"id": "0b7f6a3e-9a51-4c3e-8f43-3c1f0a2f5b10", "event": "job.succeeded",
                "created_at": "2026-01-01T12:00:02Z", "data": {"id": "3b241101-e2bb-4255-8caf-4136c566a962",
                                                               "status": "succeeded"}},
}


class WebhookAttempt(BaseModel):
    """One POST of a delivery and what it got."""

    attempt: int
    at: datetime
    status_code: int | None = Field(description="The receiver's HTTP status; null when no answer came.")
    error: str | None
    duration_ms: int


class WebhookDeliveryPublic(BaseModel):
    """One event for one URL: its status, every attempt so far, and the exact payload sent."""

    id: uuid.UUID
    event: str
    subject_id: uuid.UUID = Field(description="The job's or batch's id.")
    url: str
    status: DeliveryStatus
    attempts: int
    last_status_code: int | None
    last_error: str | None
    attempt_log: list[WebhookAttempt]
    next_attempt_at: datetime | None = Field(description="When the next attempt is due; null once it is final.")
    created_at: datetime
    delivered_at: datetime | None
    payload: dict[str, Any]

    @classmethod
    def from_row(cls, row: WebhookDelivery) -> WebhookDeliveryPublic:
        return cls(
            id=row.id, event=row.event, subject_id=row.subject_id, url=row.url, status=row.status,
            attempts=row.attempts, last_status_code=row.last_status_code, last_error=row.last_error,
            attempt_log=row.attempt_log or [], next_attempt_at=row.next_attempt_at if row.status == "pending" else None,
            created_at=row.created_at, delivered_at=row.delivered_at, payload=row.payload,
        )


class WebhookDeliveriesPublic(BaseModel):
    """A page of deliveries, newest first; pass next_cursor as `cursor` for the next page."""

    data: list[WebhookDeliveryPublic]
    next_cursor: str | None


class WebhookSecretPublic(BaseModel):
    """The tenant's new signing secret: shown this once, never again."""

    webhook_secret: str


@router.get("/v1/webhooks/deliveries", response_model=WebhookDeliveriesPublic,
            responses={200: example_response("A page of deliveries",
                                             {"data": [DELIVERY_EXAMPLE], "next_cursor": None})})
def list_deliveries_route(
    tenant: ReadTenant, session: SessionDep, settings: SettingsDep,
    status: Annotated[DeliveryStatus | None, Query(examples=["failed"])] = None,
    subject_id: Annotated[uuid.UUID | None, Query(description="a job's or batch's id")] = None,
    event: Annotated[str | None, Query(max_length=64, examples=["batch.completed"])] = None,
    limit: Annotated[int | None, Query(ge=1, examples=[50])] = None,
    cursor: Annotated[str | None, Query(description="next_cursor from the previous page")] = None,
) -> WebhookDeliveriesPublic:
    """The tenant's webhook deliveries with every attempt, newest first; filter by status, subject or event."""
    limit = min(limit or settings.default_page_size, settings.max_page_size)
    after = decode_cursor(cursor) if cursor else None
    rows = list_deliveries(session, tenant_id=tenant.id, limit=limit + 1, status=status, subject_id=subject_id,
                           event=event, after=after)
    page, more = rows[:limit], len(rows) > limit
    next_cursor = encode_cursor(page[-1].created_at, page[-1].id) if more else None
    return WebhookDeliveriesPublic(data=[WebhookDeliveryPublic.from_row(row) for row in page], next_cursor=next_cursor)


@router.post("/v1/tenant/webhook-secret", response_model=WebhookSecretPublic,
             responses={200: example_response("The new secret", {"webhook_secret": "whsec_3q2Vf..."})})
def rotate_secret_route(current: AdminTenant, session: SessionDep) -> WebhookSecretPublic:
    """A new signing secret for the tenant's webhooks, shown once; attempts from now on are signed with it."""
    secret = rotate_webhook_secret(session, tenant_id=current.id)
    session.commit()
    return WebhookSecretPublic(webhook_secret=secret)
