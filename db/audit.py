"""Moderation review and the audit trail: a tenant's flagged decisions, a reviewer's verdict, the events it left."""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import AuditEvent, ModerationDecision, utcnow
from db.pages import newest_first

REVIEW_KIND = "moderation.review"
# A reviewer's verdict and the review_status it leaves on the decision.
VERDICT_STATUS = {"uphold": "upheld", "overturn": "overturned"}
REVIEW_STATUSES = ("pending", "upheld", "overturned")


def list_moderation_decisions(
    session: Session, *, tenant_id: uuid.UUID, limit: int, flagged: bool | None = None,
    review_status: str | None = None, after: tuple[datetime, uuid.UUID] | None = None,
) -> list[ModerationDecision]:
    """The tenant's moderation decisions, newest first, after the (created_at, id) cursor; at most `limit`."""
    stmt = select(ModerationDecision).where(ModerationDecision.tenant_id == tenant_id)
    if flagged is not None:
        stmt = stmt.where(ModerationDecision.flagged.is_(flagged))
    if review_status is not None:
        stmt = stmt.where(ModerationDecision.review_status == review_status)
    return list(session.scalars(newest_first(stmt, ModerationDecision, after).limit(limit)))


def get_moderation_decision(session: Session, *, tenant_id: uuid.UUID, decision_id: uuid.UUID,
                            for_update: bool = False) -> ModerationDecision | None:
    """The tenant's decision, or None (another tenant's is None too); locked until commit if `for_update`."""
    stmt = select(ModerationDecision).where(ModerationDecision.id == decision_id,
                                            ModerationDecision.tenant_id == tenant_id)
    return session.scalar(stmt.with_for_update() if for_update else stmt)


class NotReviewable(Exception):
    """The decision was not flagged, so there is no verdict to uphold or overturn."""


@dataclass(frozen=True)
class Review:
    """A reviewer's verdict on one flagged decision."""

    verdict: str  # a key of VERDICT_STATUS
    reviewer: str
    actor: str  # who acted, as the audit trail records it (the API key's prefix)
    note: str | None = None


def review_moderation_decision(session: Session, *, tenant_id: uuid.UUID, decision_id: uuid.UUID,
                               review: Review) -> tuple[ModerationDecision, AuditEvent] | None:
    """Records the verdict on the decision and appends its audit event, in the caller's transaction.

    None when the tenant has no such decision; NotReviewable when it was not flagged. The row is locked first, so two
    reviewers acting at once leave two events in order, each naming the status it replaced."""
    if review.verdict not in VERDICT_STATUS:
        raise ValueError(f"verdict must be one of {', '.join(VERDICT_STATUS)}; got {review.verdict!r}")
    decision = get_moderation_decision(session, tenant_id=tenant_id, decision_id=decision_id, for_update=True)
    if decision is None:
        return None
    if not decision.flagged:
        raise NotReviewable(f"decision {decision_id} was not flagged")
    now, previous = utcnow(), decision.review_status
    decision.review_status = VERDICT_STATUS[review.verdict]
    decision.reviewer, decision.review_note, decision.reviewed_at = review.reviewer, review.note, now
    event = AuditEvent(
        tenant_id=tenant_id, kind=REVIEW_KIND, subject_id=str(decision_id), actor=review.actor, created_at=now,
        detail={"verdict": review.verdict, "review_status": decision.review_status, "previous_status": previous,
                "reviewer": review.reviewer, "note": review.note},
    )
    session.add(event)
    session.flush()
    return decision, event


def list_audit_events(
    session: Session, *, tenant_id: uuid.UUID, limit: int, kind: str | None = None, subject_id: str | None = None,
    after: tuple[datetime, uuid.UUID] | None = None,
) -> list[AuditEvent]:
    """The tenant's audit events, newest first, after the (created_at, id) cursor; at most `limit`."""
    stmt = select(AuditEvent).where(AuditEvent.tenant_id == tenant_id)
    if kind is not None:
        stmt = stmt.where(AuditEvent.kind == kind)
    if subject_id is not None:
        stmt = stmt.where(AuditEvent.subject_id == subject_id)
    return list(session.scalars(newest_first(stmt, AuditEvent, after).limit(limit)))
