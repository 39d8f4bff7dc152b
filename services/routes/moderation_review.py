"""/v1/moderation/decisions and /v1/audit/events: list moderation decisions, review flagged ones, read the trail."""
from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Query
from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy.orm import Session

from db.audit import (
    NotReviewable,
    Review,
    get_moderation_decision,
    list_audit_events,
    list_moderation_decisions,
    review_moderation_decision,
)
from db.models import AuditEvent, ModerationDecision
from db.queries import get_api_key
from services.deps import ACCESS_ERRORS, BODY_ERRORS, AdminTenant, CurrentTenant, ReadTenant, SessionDep, SettingsDep
from services.errors import InputError, found
from services.routes.jobs import decode_cursor, encode_cursor
from services.schemas import error_response, example_response

router = APIRouter(tags=["moderation review"], responses=ACCESS_ERRORS)

DECISION_ID = "0c7e6f1a-3d1b-4c55-9a4e-6b1f0f2d9a10"
ReviewStatusName = Literal["pending", "upheld", "overturned"]


class ModerationDecisionPublic(BaseModel):
    """A moderation verdict as it was made, and its review."""

    id: uuid.UUID
    flagged: bool
    categories: dict[str, Any]
    category_scores: dict[str, Any]
    category_applied_input_types: dict[str, Any]
    failure: str | None = Field(description="Why the item was flagged without scores (it could not be scored).")
    policy_version: int
    model_version: str | None
    input_sha256: str
    image_sha256: str | None
    text: str | None
    job_ids: list[Any] | None
    review_status: ReviewStatusName | None = Field(description="pending, upheld or overturned; null if not flagged.")
    reviewer: str | None
    review_note: str | None
    reviewed_at: datetime | None
    created_at: datetime

    @classmethod
    def from_row(cls, row: ModerationDecision) -> ModerationDecisionPublic:
        return cls.model_validate(row, from_attributes=True)


class ModerationDecisionsPublic(BaseModel):
    """A page of decisions, newest first; pass next_cursor as `cursor` for the next page."""

    data: list[ModerationDecisionPublic]
    next_cursor: str | None


class ReviewCreate(BaseModel):
    """A reviewer's verdict on a flagged decision."""

    model_config = ConfigDict(extra="forbid")

    verdict: Literal["uphold", "overturn"]
    note: str | None = Field(None, max_length=2000)
    reviewer: str | None = Field(None, min_length=1, max_length=200,
                                 description="Who reviewed; the API key's name and prefix when omitted.")

    @field_validator("note", "reviewer")
    @classmethod
    def storable_text(cls, value: str | None) -> str | None:
        # Postgres text holds no NUL, and a lone surrogate (legal in JSON's \u escapes) cannot be encoded at all.
        if value is not None:
            if "\x00" in value:
                raise ValueError("must not contain a NUL character")
            value.encode("utf-8")  # UnicodeEncodeError is a ValueError: pydantic reports it on the field
        return value


class AuditEventPublic(BaseModel):
    """One entry of the append-only audit trail."""

    id: uuid.UUID
    kind: str
    subject_id: str | None
    actor: str
    detail: dict[str, Any]
    created_at: datetime

    @classmethod
    def from_row(cls, row: AuditEvent) -> AuditEventPublic:
        return cls.model_validate(row, from_attributes=True)


class AuditEventsPublic(BaseModel):
    """A page of audit events, newest first."""

    data: list[AuditEventPublic]
    next_cursor: str | None


class ReviewPublic(BaseModel):
    """The reviewed decision and the audit event that records the review."""

    decision: ModerationDecisionPublic
    audit_event: AuditEventPublic


DECISION_EXAMPLE = {
    "id": DECISION_ID, "flagged": True, "categories": {"violence": True, "spam": False},
    "category_scores": {"violence": 0.91, "spam": 0.08}, "category_applied_input_types": {"violence": ["image"]},
    "failure": None, "policy_version": 3, "model_version": "lensq-tiny@3f2a9c1e", "input_sha256": "7d1e" + "0" * 60,
    "image_sha256": "9f2d" + "0" * 60, "text": "look at this", "job_ids": None, "review_status": "pending",
    "reviewer": None, "review_note": None, "reviewed_at": None, "created_at": "2026-01-01T12:00:00Z",
}
AUDIT_EXAMPLE = {
    "id": "5a0f3c2e-8d7b-4e21-b0a3-2f6c1d9e8b47", "kind": "moderation.review", "subject_id": DECISION_ID,
    "actor": "lq_AbCdEfGh", "created_at": "2026-01-01T12:05:00Z",
    "detail": {"verdict": "uphold", "review_status": "upheld", "previous_status": "pending", "reviewer": "ana",
               "note": "clearly violent"},
}
REVIEWED_EXAMPLE = {**DECISION_EXAMPLE, "review_status": "upheld", "reviewer": "ana", "review_note": "clearly violent",
                    "reviewed_at": "2026-01-01T12:05:00Z"}
NOT_FOUND = {404: error_response("No such decision for this tenant", "decision_id", "no decision with this id")}
REVIEW_BODY = Body(openapi_examples={
    "uphold": {"summary": "Uphold the flag", "value": {"verdict": "uphold", "note": "clearly violent"}},
    "overturn": {"summary": "Overturn it", "value": {"verdict": "overturn", "reviewer": "ana"}},
})
Limit = Annotated[int | None, Query(ge=1, examples=[50])]
Cursor = Annotated[str | None, Query(description="next_cursor from the previous page")]


def _page(rows: list, limit: int) -> tuple[list, str | None]:
    page = rows[:limit]
    return page, encode_cursor(page[-1].created_at, page[-1].id) if len(rows) > limit else None


@router.get("/v1/moderation/decisions", response_model=ModerationDecisionsPublic, responses={
    200: example_response("A page of decisions", {"data": [DECISION_EXAMPLE], "next_cursor": None})})
def list_decisions(
    tenant: ReadTenant, session: SessionDep, settings: SettingsDep,
    flagged: Annotated[bool | None, Query(examples=[True])] = None,
    review_status: Annotated[ReviewStatusName | None, Query(examples=["pending"])] = None,
    limit: Limit = None, cursor: Cursor = None,
) -> ModerationDecisionsPublic:
    """The tenant's moderation decisions, newest first; filter flagged ones, or by review status."""
    limit = min(limit or settings.default_page_size, settings.max_page_size)
    rows = list_moderation_decisions(session, tenant_id=tenant.id, limit=limit + 1, flagged=flagged,
                                     review_status=review_status, after=decode_cursor(cursor) if cursor else None)
    page, next_cursor = _page(rows, limit)
    return ModerationDecisionsPublic(data=[ModerationDecisionPublic.from_row(row) for row in page],
                                     next_cursor=next_cursor)


def record_review(session: Session, tenant: CurrentTenant, decision_id: uuid.UUID, *, verdict: str,
                  note: str | None, reviewer: str | None = None) -> tuple[ModerationDecision, AuditEvent]:
    """Reviews the tenant's decision and commits it with its audit event; 404 if none, 409 if it was not flagged."""
    key = get_api_key(session, tenant_id=tenant.id, key_id=tenant.key_id)
    review = Review(verdict=verdict, reviewer=reviewer or (f"{key.name} ({key.prefix})" if key.name else key.prefix),
                    actor=key.prefix, note=note)
    try:
        reviewed = review_moderation_decision(session, tenant_id=tenant.id, decision_id=decision_id, review=review)
    except NotReviewable:
        session.rollback()
        raise InputError("decision_id", "this decision was not flagged: there is nothing to review", 409) from None
    decision, event = found(reviewed, "decision_id")
    session.commit()
    return decision, event


@router.post("/v1/moderation/decisions/{decision_id}/review", response_model=ReviewPublic, responses={
    200: example_response("Reviewed, and recorded in the audit trail",
                          {"decision": REVIEWED_EXAMPLE, "audit_event": AUDIT_EXAMPLE}),
    409: error_response("The decision was not flagged", "decision_id", "this decision was not flagged"),
    **NOT_FOUND, **BODY_ERRORS})
def review_decision(decision_id: uuid.UUID, tenant: AdminTenant, session: SessionDep,
                    body: Annotated[ReviewCreate | None, REVIEW_BODY] = None) -> ReviewPublic:
    """Uphold or overturn a flagged decision; the decision and an audit event are written in one transaction."""
    if body is None:  # the decision is looked up first: another tenant's id is a 404 whatever the body
        found(get_moderation_decision(session, tenant_id=tenant.id, decision_id=decision_id), "decision_id")
        raise InputError("verdict", "a review needs a JSON body with a verdict: uphold or overturn")
    decision, event = record_review(session, tenant, decision_id, verdict=body.verdict, note=body.note,
                                    reviewer=body.reviewer)
    return ReviewPublic(decision=ModerationDecisionPublic.from_row(decision),
                        audit_event=AuditEventPublic.from_row(event))


@router.get("/v1/audit/events", response_model=AuditEventsPublic, responses={
    200: example_response("A page of audit events", {"data": [AUDIT_EXAMPLE], "next_cursor": None})})
def list_events(
    tenant: AdminTenant, session: SessionDep, settings: SettingsDep,
    kind: Annotated[str | None, Query(max_length=64, pattern=r"^[\w.:-]+$", examples=["moderation.review"])] = None,
    subject_id: Annotated[str | None, Query(max_length=200, pattern=r"^[\w.:-]+$", examples=[DECISION_ID])] = None,
    limit: Limit = None, cursor: Cursor = None,
) -> AuditEventsPublic:
    """The tenant's audit trail, newest first: who reviewed what, and when."""
    limit = min(limit or settings.default_page_size, settings.max_page_size)
    rows = list_audit_events(session, tenant_id=tenant.id, limit=limit + 1, kind=kind, subject_id=subject_id,
                             after=decode_cursor(cursor) if cursor else None)
    page, next_cursor = _page(rows, limit)
    return AuditEventsPublic(data=[AuditEventPublic.from_row(row) for row in page], next_cursor=next_cursor)
