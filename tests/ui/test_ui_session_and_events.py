"""/ui over plain HTTP: the session cookie, CSRF refusals, scopes, tenant isolation, and the event stream."""
from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest

from db.queries import create_api_key
from image_factory import shape_png


@contextmanager
def signed_in_client(base_url: str, token: str) -> Iterator[httpx.Client]:
    """A client holding the session cookie the sign-in form gives (it posts from LensQ's own origin)."""
    with httpx.Client(base_url=base_url, timeout=30, headers={"Origin": base_url}) as client:
        response = client.post("/ui/session", data={"api_key": token})
        assert response.status_code == 303 and response.headers["location"] == "/ui", response.text
        yield client


def read_events(lines: Iterator[str], *, until, timeout: float = 20) -> list[dict]:
    """Job events from a stream's lines until `until(events)` holds; fails at the deadline."""
    events, deadline, event = [], time.monotonic() + timeout, {}
    for line in lines:
        if line.startswith("id: "):
            event["id"] = line[4:]
        elif line.startswith("data: "):
            events.append({**json.loads(line[6:]), "event_id": event.get("id")})
            if until(events):
                return events
        assert time.monotonic() < deadline, f"stream gave only {events}"
    pytest.fail(f"stream ended early after {events}")


@pytest.fixture
def owner(unserved_api, make_ui_tenant) -> Iterator[tuple]:
    tenant = make_ui_tenant()
    with signed_in_client(unserved_api.url, tenant.token) as client:
        yield tenant, client


def submit(client: httpx.Client, **fields) -> httpx.Response:
    return client.post("/ui/jobs", data={"task": "caption", **fields}, headers={"Accept": "application/json"},
                       files={"image": ("a.png", shape_png(7), "image/png")})


def test_the_session_cookie_is_signed_httponly_strict_and_never_the_key(unserved_api, make_ui_tenant):
    tenant = make_ui_tenant()
    with httpx.Client(base_url=unserved_api.url, headers={"Origin": unserved_api.url}) as client:
        refused = client.post("/ui/session", data={"api_key": tenant.token + "x"})
        assert refused.status_code == 401 and "unknown or revoked API key" in refused.text
        response = client.post("/ui/session", data={"api_key": tenant.token})
    cookie = response.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/ui" in cookie
    assert tenant.token not in cookie and tenant.token[3:] not in cookie
    value = response.cookies["lensq_session"]
    forged = value[:-2] + ("AA" if not value.endswith("AA") else "BB")
    with httpx.Client(base_url=unserved_api.url, cookies={"lensq_session": forged}) as client:
        assert client.get("/ui").headers["location"] == "/ui/sign-in"
        assert client.get("/ui/events").status_code == 401
    with httpx.Client(base_url=unserved_api.url, cookies={"lensq_session": value}) as client:
        page = client.get("/ui")
        assert page.status_code == 200 and page.headers["cache-control"] == "no-store"
        assert "frame-ancestors 'none'" in page.headers["content-security-policy"]


def test_revoking_the_key_ends_its_sessions_at_once(unserved_api, owner, session_factory):
    tenant, client = owner
    assert client.get("/ui/batches").status_code == 200
    from db.queries import revoke_api_key

    with session_factory.begin() as session:
        assert revoke_api_key(session, prefix_or_id=tenant.prefix) == 1
    assert client.get("/ui/batches").headers["location"] == "/ui/sign-in"


@pytest.mark.parametrize("headers", [{"Origin": "https://evil.example"}, {"Origin": "null"}, {"Origin": ""},
                                     {"Origin": "", "Referer": "https://evil.example/page"}])
def test_a_cross_site_post_is_refused(owner, headers):
    _tenant, client = owner
    for path, data in [("/ui/jobs", {"task": "caption"}), ("/ui/moderation/review", {"verdict": "uphold"}),
                       ("/ui/sign-out", {})]:
        response = client.post(path, data=data, headers=headers)
        assert response.status_code == 403, (path, response.text)
        assert response.json()["error"]["field"] == "Origin"
    assert client.get("/ui").status_code == 200  # still signed in: the forged sign-out did nothing


def test_the_page_submits_through_the_api_intake(owner):
    tenant, client = owner
    accepted = submit(client, task="vqa", question="what shape is it?")
    assert accepted.status_code == 202, accepted.text
    assert accepted.json()["params"] == {"question": "what shape is it?"} and accepted.json()["status"] == "queued"
    for fields, field in [({"task": "vqa"}, "question"), ({"task": "paint"}, "task"), ({"labels": "a"}, "labels")]:
        refused = submit(client, **fields)
        assert refused.status_code == 422 and refused.json()["error"]["field"] == field, refused.text
    with httpx.Client(base_url=client.base_url, headers=tenant.headers) as api:
        assert [job["task"] for job in api.get("/v1/jobs").json()["data"]] == ["vqa"]


def test_each_page_needs_the_keys_scope(unserved_api, make_ui_tenant, session_factory):
    reader = make_ui_tenant(scopes=["read"])
    with session_factory.begin() as session:
        _key, submit_only = create_api_key(session, tenant_id=reader.id, scopes=["submit"])
    with signed_in_client(unserved_api.url, reader.token) as client:
        assert submit(client).status_code == 403
        review = client.post("/ui/moderation/review", data={"decision_id": "0" * 32, "verdict": "uphold"})
        assert review.status_code == 403 and review.json()["error"]["field"] == "Authorization"
    with signed_in_client(unserved_api.url, submit_only) as client:
        page = client.get("/ui/batches")
        assert page.status_code == 403 and "lacks the <code>read</code> scope" in page.text
        assert client.get("/ui/events").status_code == 403
        assert submit(client).status_code == 202


def test_another_tenants_batch_thumbnail_and_stream_are_404(unserved_api, owner, make_ui_tenant):
    tenant, client = owner
    job = submit(client).json()
    with httpx.Client(base_url=unserved_api.url, headers=tenant.headers) as api:
        batch = api.post("/v1/batches", json={"task": "caption", "items": [
            {"image": "data:image/png;base64," + base64.b64encode(shape_png(8)).decode()}]}).json()
    assert client.get("/ui/thumbnail", params={"sha256": job["image_sha256"]}).headers["content-type"] == "image/jpeg"
    stranger = make_ui_tenant()
    with signed_in_client(unserved_api.url, stranger.token) as other:
        thumb = other.get("/ui/thumbnail", params={"sha256": job["image_sha256"]})
        assert thumb.status_code == 404 and thumb.json()["error"]["field"] == "sha256"
        assert other.get("/ui/batch", params={"batch_id": batch["id"]}).status_code == 404
        assert other.get("/ui/events", params={"batch_id": batch["id"]}).status_code == 404
        assert batch["id"][:8] not in other.get("/ui/batches").text
        bad = other.get("/ui/thumbnail", params={"sha256": "../etc/passwd"})
        assert bad.status_code == 422 and bad.json()["error"]["field"] == "sha256"


def test_the_stream_sends_the_newest_jobs_then_each_change(unserved_api, owner):
    tenant, client = owner
    first = submit(client).json()
    with client.stream("GET", "/ui/events") as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        lines = stream.iter_lines()
        [snapshot] = read_events(lines, until=lambda events: events)
        assert (snapshot["id"], snapshot["status"]) == (first["id"], "queued")
        second = submit(client).json()
        with httpx.Client(base_url=unserved_api.url, headers=tenant.headers) as api:
            assert api.post(f"/v1/jobs/{first['id']}/cancel").json()["status"] == "cancelled"
        later = read_events(lines, until=lambda events: {(e["id"], e["status"]) for e in events} >= {
            (second["id"], "queued"), (first["id"], "cancelled")})
    # A browser reconnecting with the last id it got misses nothing that changed after it.
    with client.stream("GET", "/ui/events", headers={"Last-Event-ID": later[-1]["event_id"]}) as resumed:
        third = submit(client).json()
        read_events(resumed.iter_lines(), until=lambda events: third["id"] in {e["id"] for e in events})
