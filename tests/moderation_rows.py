"""Seeds moderation decision rows as POST /v1/moderations writes them, for tests of the reviewer's side."""
from __future__ import annotations

import secrets
import uuid

from db.models import ModerationDecision


def seed_decision(session_factory, tenant_id: uuid.UUID, *, flagged: bool = True, **fields) -> uuid.UUID:
    """A moderation decision row, as POST /v1/moderations would have written it."""
    values = {
        "input_sha256": secrets.token_hex(32), "policy_version": 1, "model_version": "lensq-tiny@test",
        "flagged": flagged, "categories": {"violence": flagged, "spam": False},
        "category_scores": {"violence": 0.93 if flagged else 0.1, "spam": 0.02},
        "category_applied_input_types": {"violence": ["image"], "spam": ["image"]},
        "review_status": "pending" if flagged else None, **fields,
    }
    with session_factory.begin() as session:
        decision = ModerationDecision(tenant_id=tenant_id, **values)
        session.add(decision)
        session.flush()
        return decision.id
