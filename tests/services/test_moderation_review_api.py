"""GET /v1/moderation/decisions, POST .../{id}/review and GET /v1/audit/events: scopes, filters, tenant isolation."""
from __future__ import annotations

import secrets
import uuid

import httpx
import pytest
from sqlalchemy import select

from db.models import KEY_SCOPES, AuditEvent, ModerationDecision
from moderation_rows import seed_decision


def make_key(session_factory, *, scopes=KEY_SCOPES, tenant_id: uuid.UUID | None = None) -> dict:
    """A key with these scopes for the given tenant (a new one if none): its headers and tenant id."""
    from db.queries import create_api_key, get_or_create_tenant

    with session_factory.begin() as session:
        if tenant_id is None:
            tenant_id = get_or_create_tenant(session, name=f"tenant-{secrets.token_hex(4)}").id
        key, token = create_api_key(session, tenant_id=tenant_id, name="reviewer-key", scopes=scopes)
        return {"headers": {"Authorization": f"Bearer {token}"}, "tenant_id": tenant_id, "prefix": key.prefix}


@pytest.fixture
def http(unserved_api):
    with httpx.Client(base_url=unserved_api.url, timeout=60) as client:
        yield client


def test_list_filters_by_flag_and_review_status_and_pages(http, session_factory):
    admin = make_key(session_factory)
    flagged = [seed_decision(session_factory, admin["tenant_id"]) for _ in range(3)]
    clean = seed_decision(session_factory, admin["tenant_id"], flagged=False)
    upheld = seed_decision(session_factory, admin["tenant_id"], review_status="upheld", reviewer="ana")

    every = http.get("/v1/moderation/decisions", headers=admin["headers"]).json()
    assert [d["id"] for d in every["data"]] == [str(i) for i in (upheld, clean, *reversed(flagged))]
    only_flagged = http.get("/v1/moderation/decisions", params={"flagged": "true"}, headers=admin["headers"]).json()
    assert str(clean) not in {d["id"] for d in only_flagged["data"]} and len(only_flagged["data"]) == 4
    pending = http.get("/v1/moderation/decisions", params={"review_status": "pending", "limit": 2},
                       headers=admin["headers"]).json()
    assert [d["id"] for d in pending["data"]] == [str(flagged[2]), str(flagged[1])]
    rest = http.get("/v1/moderation/decisions", params={"review_status": "pending", "cursor": pending["next_cursor"]},
                    headers=admin["headers"]).json()
    assert [d["id"] for d in rest["data"]] == [str(flagged[0])] and rest["next_cursor"] is None
    first = pending["data"][0]
    assert first["category_scores"]["violence"] == 0.93 and first["policy_version"] == 1
    assert first["model_version"] == "lensq-tiny@test" and first["review_status"] == "pending"

    bad = http.get("/v1/moderation/decisions", params={"review_status": "maybe"}, headers=admin["headers"])
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "review_status"
    bad_cursor = http.get("/v1/moderation/decisions", params={"cursor": "nope"}, headers=admin["headers"])
    assert bad_cursor.status_code == 422 and bad_cursor.json()["error"]["field"] == "cursor"


def test_review_updates_the_decision_and_appends_an_audit_event(http, session_factory):
    admin = make_key(session_factory)
    decision_id = seed_decision(session_factory, admin["tenant_id"])
    response = http.post(f"/v1/moderation/decisions/{decision_id}/review", headers=admin["headers"],
                         json={"verdict": "overturn", "note": "a cartoon, not violence", "reviewer": "ana"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["decision"]["review_status"] == "overturned" and body["decision"]["reviewer"] == "ana"
    assert body["decision"]["review_note"] == "a cartoon, not violence" and body["decision"]["reviewed_at"]
    assert body["audit_event"]["actor"] == admin["prefix"] and body["audit_event"]["kind"] == "moderation.review"
    assert body["audit_event"]["detail"]["previous_status"] == "pending"

    # A second reviewer changes it back: both events stay, newest first, each naming the status it replaced.
    again = http.post(f"/v1/moderation/decisions/{decision_id}/review", headers=admin["headers"],
                      json={"verdict": "uphold"})
    assert again.json()["decision"]["reviewer"] == f"reviewer-key ({admin['prefix']})"
    trail = http.get("/v1/audit/events", params={"subject_id": str(decision_id)}, headers=admin["headers"]).json()
    assert [(e["detail"]["verdict"], e["detail"]["previous_status"]) for e in trail["data"]] == [
        ("uphold", "overturned"), ("overturn", "pending")]
    with session_factory() as session:
        row = session.get(ModerationDecision, decision_id)
        assert (row.review_status, row.review_note) == ("upheld", None)
        events = session.scalars(select(AuditEvent).where(AuditEvent.subject_id == str(decision_id))).all()
        assert len(events) == 2 and {e.tenant_id for e in events} == {admin["tenant_id"]}


@pytest.mark.parametrize("body, field", [
    ({"verdict": "delete"}, "verdict"), ({}, "verdict"), ({"verdict": "uphold", "note": "x" * 2001}, "note"),
    ({"verdict": "uphold", "note": "nul\u0000here"}, "note"), ({"verdict": "uphold", "extra": 1}, "extra"),
])
def test_a_bad_review_names_the_field_and_changes_nothing(http, session_factory, body, field):
    admin = make_key(session_factory)
    decision_id = seed_decision(session_factory, admin["tenant_id"])
    response = http.post(f"/v1/moderation/decisions/{decision_id}/review", headers=admin["headers"], json=body)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["field"] == field
    with session_factory() as session:
        assert session.get(ModerationDecision, decision_id).review_status == "pending"


def test_an_unflagged_decision_cannot_be_reviewed(http, session_factory):
    admin = make_key(session_factory)
    decision_id = seed_decision(session_factory, admin["tenant_id"], flagged=False)
    response = http.post(f"/v1/moderation/decisions/{decision_id}/review", headers=admin["headers"],
                         json={"verdict": "uphold"})
    assert response.status_code == 409 and response.json()["error"]["field"] == "decision_id"
    assert http.get("/v1/audit/events", headers=admin["headers"]).json()["data"] == []


def test_scopes_read_lists_admin_reviews_and_reads_the_trail(http, session_factory):
    admin = make_key(session_factory)
    reader = make_key(session_factory, scopes=["read"], tenant_id=admin["tenant_id"])
    submitter = make_key(session_factory, scopes=["submit"], tenant_id=admin["tenant_id"])
    decision_id = seed_decision(session_factory, admin["tenant_id"])
    review = f"/v1/moderation/decisions/{decision_id}/review"

    assert http.get("/v1/moderation/decisions", headers=reader["headers"]).status_code == 200
    for method, path, key in [("GET", "/v1/moderation/decisions", submitter), ("POST", review, reader),
                              ("GET", "/v1/audit/events", reader)]:
        response = http.request(method, path, headers=key["headers"], json={"verdict": "uphold"})
        assert response.status_code == 403, (method, path, response.text)
        assert response.json()["error"]["field"] == "Authorization"
    assert http.get("/v1/moderation/decisions").status_code == 401
    with session_factory() as session:
        assert session.get(ModerationDecision, decision_id).review_status == "pending"


def test_another_tenants_decision_is_404_and_its_trail_unseen(http, session_factory):
    owner, stranger = make_key(session_factory), make_key(session_factory)
    decision_id = seed_decision(session_factory, owner["tenant_id"])
    owner_review = http.post(f"/v1/moderation/decisions/{decision_id}/review", headers=owner["headers"],
                             json={"verdict": "uphold"})
    assert owner_review.status_code == 200

    for body in ({"verdict": "overturn"}, None):  # no body at all: still a 404, the id is checked first
        response = http.post(f"/v1/moderation/decisions/{decision_id}/review", headers=stranger["headers"], json=body)
        assert response.status_code == 404 and response.json()["error"]["field"] == "decision_id"
        assert str(decision_id) not in response.text
    no_body = http.post(f"/v1/moderation/decisions/{decision_id}/review", headers=owner["headers"])
    assert no_body.status_code == 422 and no_body.json()["error"]["field"] == "verdict"
    assert http.get("/v1/moderation/decisions", headers=stranger["headers"]).json()["data"] == []
    assert http.get("/v1/audit/events", headers=stranger["headers"]).json()["data"] == []
    with session_factory() as session:
        assert session.get(ModerationDecision, decision_id).review_status == "upheld"  # the stranger changed nothing
