"""Moderation in the ledger: the built-in policy, a tenant's policy versions, and the decisions made under them."""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db.models import AuditEvent, ModerationDecision, ModerationPolicy, utcnow

# The version number of the built-in policy, used by a tenant that never stored one of its own.
DEFAULT_POLICY_VERSION = 0
POLICY_AUDIT_KIND = "moderation.policy"
PENDING_REVIEW = "pending"

_EVERYDAY = ["a photo of people", "a photo of an everyday object", "a photo of a landscape", "a photo of an animal",
             "a photo of food", "a drawing of a simple shape"]
# Zero-shot categories score the image: the summed probability of `labels` against `against` (CLIP prompts).
# The sentiment category scores the post: the sentiment head's negative probability over the image and its text.
DEFAULT_POLICY: dict[str, dict[str, Any]] = {
    "violence": {"source": "classify", "threshold": 0.5, "against": _EVERYDAY,
                 "labels": ["a photo of violence", "a photo of a weapon", "a photo of blood", "a photo of a fight"]},
    "sexual": {"source": "classify", "threshold": 0.5, "against": _EVERYDAY,
               "labels": ["an explicit sexual photo", "a photo of nudity"]},
    "hate": {"source": "classify", "threshold": 0.5, "against": _EVERYDAY + ["a flag", "a logo"],
             "labels": ["a hate symbol", "an extremist flag", "a racist caricature"]},
    "negative_sentiment": {"source": "sentiment", "threshold": 0.9,
                           "description": "a hostile post: the negative probability of the post's sentiment"},
}


@dataclass(frozen=True)
class PolicyVersion:
    """The policy in force for a tenant: its version (0 for the built-in one) and categories."""

    version: int
    categories: dict[str, dict[str, Any]]
    created_at: datetime | None

    @property
    def is_default(self) -> bool:
        return self.version == DEFAULT_POLICY_VERSION


def current_policy(session: Session, *, tenant_id: uuid.UUID) -> PolicyVersion:
    """The tenant's newest policy version, or the built-in policy when it has none."""
    stmt = (select(ModerationPolicy).where(ModerationPolicy.tenant_id == tenant_id)
            .order_by(ModerationPolicy.version.desc()).limit(1))
    row = session.scalar(stmt)
    if row is None:
        return PolicyVersion(DEFAULT_POLICY_VERSION, DEFAULT_POLICY, None)
    return PolicyVersion(row.version, row.categories, row.created_at)


def add_policy_version(session: Session, *, tenant_id: uuid.UUID, categories: dict[str, Any],
                       actor: str) -> PolicyVersion:
    """Stores the next version and its audit event; a concurrent change of the same version fails the flush
    (primary key), so two writers never both believe they made version N."""
    latest = session.scalar(select(func.max(ModerationPolicy.version)).where(ModerationPolicy.tenant_id == tenant_id))
    version = (latest or DEFAULT_POLICY_VERSION) + 1
    now = utcnow()
    session.add(ModerationPolicy(tenant_id=tenant_id, version=version, categories=categories, created_at=now))
    session.add(AuditEvent(tenant_id=tenant_id, kind=POLICY_AUDIT_KIND, subject_id=f"policy:v{version}", actor=actor,
                           detail={"version": version, "previous_version": latest or DEFAULT_POLICY_VERSION,
                                   "categories": categories}, created_at=now))
    session.flush()
    return PolicyVersion(version, categories, now)


@dataclass(frozen=True)
class NewDecision:
    """One verdict as the API made it, before it is stored."""

    input_sha256: str
    image_sha256: str | None
    text: str | None
    model_version: str | None
    policy_version: int
    flagged: bool
    categories: dict[str, bool]
    category_scores: dict[str, float | None]
    category_applied_input_types: dict[str, list[str]]
    failure: str | None
    job_ids: list[str]


def record_decisions(session: Session, *, tenant_id: uuid.UUID, decisions: list[NewDecision]) -> list[ModerationDecision]:
    """Stores the verdicts; each flagged one waits for a reviewer (review_status pending)."""
    now = utcnow()
    rows = [ModerationDecision(tenant_id=tenant_id, created_at=now,
                               review_status=PENDING_REVIEW if new.flagged else None, **new.__dict__)
            for new in decisions]
    session.add_all(rows)
    session.flush()
    return rows

