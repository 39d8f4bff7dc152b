"""Webhooks end to end: a real receiver gets signed job and batch events from real workers, retries, the log.

The receiver is a threaded http.server on 127.0.0.1 (the test workers allow that address with
LENSQ_WEBHOOK_ALLOW_CIDRS; production refuses it). The signature is checked with the snippet of docs/WEBHOOKS.md.
"""
from __future__ import annotations

import json
import re
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from db.models import KEY_SCOPES
from image_factory import data_url, shape_png
from polling import wait_until

DOCS = Path(__file__).resolve().parents[2] / "docs" / "WEBHOOKS.md"


def _docs_verifier():
    """verify_signature() as docs/WEBHOOKS.md prints it, so the documented snippet is the one tested."""
    [code] = re.findall(r"```python\n(.*?)```", DOCS.read_text(), re.S)
    namespace: dict = {}
    exec(compile(code, str(DOCS), "exec"), namespace)
    return namespace["verify_signature"]


verify_signature = _docs_verifier()


# --- a receiver ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.monotonic() on arrival

    @property
    def json(self) -> dict:
        return json.loads(self.body)


class Receiver:
    """Records every POST; a path can be given a script of statuses to answer before it answers 200."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.scripts: dict[str, list[int]] = {}
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                status = receiver.record(Received(self.path, dict(self.headers), body, time.monotonic()))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def record(self, request: Received) -> int:
        with self.lock:
            self.received.append(request)
            script = self.scripts.get(request.path)
            return script.pop(0) if script else 200

    def at(self, path: str) -> list[Received]:
        with self.lock:
            return [r for r in self.received if r.path == path]

    def wait_for(self, path: str, count: int = 1, timeout: float = 120) -> list[Received]:
        return wait_until(lambda: len(self.at(path)) >= count and self.at(path), timeout=timeout,
                          what=f"{count} webhook(s) at {path}")


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    thread = threading.Thread(target=receiver.server.serve_forever, daemon=True)
    thread.start()
    yield receiver
    receiver.server.shutdown()
    receiver.server.server_close()


def unique_path(name: str) -> str:
    return f"/{name}-{secrets.token_hex(4)}"


# --- tenants ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Owner:
    headers: dict[str, str]
    secret: str


def make_owner(session_factory, http: httpx.Client) -> Owner:
    """A new tenant with an all-scopes key, and its webhook secret fetched through the admin route."""
    from db.queries import create_api_key, get_or_create_tenant

    with session_factory.begin() as session:
        tenant = get_or_create_tenant(session, name=f"tenant-{secrets.token_hex(4)}")
        _, token = create_api_key(session, tenant_id=tenant.id, name="owner", scopes=KEY_SCOPES)
    headers = {"Authorization": f"Bearer {token}"}
    response = http.post("/v1/tenant/webhook-secret", headers=headers)
    assert response.status_code == 200, response.text
    return Owner(headers=headers, secret=response.json()["webhook_secret"])


def deliveries(http: httpx.Client, owner: Owner, **params) -> list[dict]:
    response = http.get("/v1/webhooks/deliveries", headers=owner.headers, params=params)
    assert response.status_code == 200, response.text
    return response.json()["data"]


def assert_signed(request: Received, secret: str) -> None:
    header = request.headers["LensQ-Signature"]
    assert verify_signature(secret, request.body, header)
    assert not verify_signature(secret, request.body.replace(b'"succeeded"', b'"failed"', 1) + b" ", header)
    assert not verify_signature("whsec_not-the-secret", request.body, header)


# --- the tests -------------------------------------------------------------------------------------

@pytest.mark.timeout(240)
def test_a_finished_job_is_posted_signed_to_its_callback_and_the_tenant_default(
        api, worker_pool, receiver, session_factory):
    worker_pool.ensure(1)
    own_path, default_path = unique_path("job"), unique_path("tenant-default")
    with api.client() as http:
        owner = make_owner(session_factory, http)
        patched = http.patch("/v1/tenant", headers=owner.headers, json={"webhook_url": receiver.url + default_path})
        assert patched.status_code == 200, patched.text
        assert patched.json()["webhook_url"] == receiver.url + default_path
        assert patched.json()["webhook_secret"] is None  # the tenant already had one: it is never shown again
        form = {"task": "caption", "callback_url": receiver.url + own_path}
        with_callback = http.post("/v1/jobs", headers=owner.headers, data=form,
                                  files={"image": ("a.png", shape_png(7001), "image/png")})
        assert with_callback.status_code == 202, with_callback.text
        assert with_callback.json()["callback_url"] == receiver.url + own_path
        plain = http.post("/v1/jobs", headers=owner.headers,
                          json={"task": "caption", "image": data_url(shape_png(7002))})
        assert plain.status_code == 202, plain.text

        [event] = receiver.wait_for(own_path)
        [default_event] = receiver.wait_for(default_path)
        job = http.get(f"/v1/jobs/{with_callback.json()['id']}", headers=owner.headers).json()
        logged = wait_until(lambda: [d for d in deliveries(http, owner, subject_id=job["id"])
                                     if d["status"] == "delivered"], timeout=30, what="the delivery logged")
    assert event.headers["LensQ-Event"] == "job.succeeded" and event.json["event"] == "job.succeeded"
    assert event.json["data"]["id"] == job["id"] and event.json["data"]["result"] == job["result"]
    assert job["status"] == "succeeded" and isinstance(job["result"]["caption"], str)
    assert default_event.json["data"]["id"] == plain.json()["id"]
    assert_signed(event, owner.secret)
    assert_signed(default_event, owner.secret)
    [delivery] = logged
    assert delivery["attempts"] == 1 and delivery["attempt_log"][0]["status_code"] == 200
    assert delivery["payload"] == event.json and event.headers["LensQ-Delivery"] == delivery["id"]


@pytest.mark.timeout(120)
def test_a_failing_receiver_is_retried_with_growing_delays_and_the_log_shows_each_attempt(
        unserved_api, worker_pool, receiver, session_factory):
    worker_pool.ensure(1)  # its deliverer sends the event; the job itself is never run (nobody serves its queue)
    path = unique_path("flaky")
    receiver.scripts[path] = [500, 500]
    with unserved_api.client() as http:
        owner = make_owner(session_factory, http)
        job = http.post("/v1/jobs", headers=owner.headers, json={
            "task": "caption", "image": data_url(shape_png(7003)), "callback_url": receiver.url + path}).json()
        cancelled = http.post(f"/v1/jobs/{job['id']}/cancel", headers=owner.headers)
        assert cancelled.status_code == 200, cancelled.text
        attempts = receiver.wait_for(path, count=3, timeout=60)
        [delivery] = wait_until(lambda: deliveries(http, owner, subject_id=job["id"], status="delivered"),
                                timeout=30, what="the delivery marked delivered")
    assert len(attempts) == 3
    first_gap, second_gap = attempts[1].at - attempts[0].at, attempts[2].at - attempts[1].at
    assert 0.3 < first_gap < second_gap, (first_gap, second_gap)  # base 0.5s (the test setting), then doubled
    assert {a.json["id"] for a in attempts} == {delivery["id"]}  # one event, sent three times
    assert all(a.json["event"] == "job.cancelled" for a in attempts)
    assert delivery["attempts"] == 3 and delivery["last_status_code"] == 200
    assert [a["status_code"] for a in delivery["attempt_log"]] == [500, 500, 200]
    assert [a["attempt"] for a in delivery["attempt_log"]] == [1, 2, 3]
    assert delivery["attempt_log"][0]["error"] == "answered HTTP 500"


@pytest.mark.timeout(240)
def test_a_batch_posts_one_batch_completed_with_its_counts_and_its_jobs_post_nothing(
        api, worker_pool, receiver, session_factory):
    worker_pool.ensure(1)
    batch_path, default_path = unique_path("batch"), unique_path("tenant-default")
    items = [{"image": data_url(shape_png(7100 + i)), "ref": f"item-{i}"} for i in range(5)]
    with api.client() as http:
        owner = make_owner(session_factory, http)
        # A tenant default too: the batch's jobs must not send it their own events.
        http.patch("/v1/tenant", headers=owner.headers, json={"webhook_url": receiver.url + default_path})
        response = http.post("/v1/batches", headers=owner.headers,
                             json={"task": "caption", "items": items, "callback_url": receiver.url + batch_path})
        assert response.status_code == 202, response.text
        batch = response.json()
        [event] = receiver.wait_for(batch_path)
        final = http.get(f"/v1/batches/{batch['id']}", headers=owner.headers).json()
        job_ids = [row["job_id"] for row in map(json.loads, http.get(
            f"/v1/batches/{batch['id']}/results", headers=owner.headers).text.splitlines())]
        logged = deliveries(http, owner)
    assert event.json["event"] == "batch.completed" and event.headers["LensQ-Event"] == "batch.completed"
    assert event.json["data"]["id"] == batch["id"] and event.json["data"]["total"] == 5
    assert event.json["data"]["counts"] == final["counts"] == {
        "queued": 0, "running": 0, "succeeded": 5, "failed": 0, "cancelled": 0}
    assert verify_signature(owner.secret, event.body, event.headers["LensQ-Signature"])
    assert [d["event"] for d in logged] == ["batch.completed"]
    assert not {d["subject_id"] for d in logged} & set(job_ids) and receiver.at(default_path) == []


def test_another_tenant_cannot_read_the_delivery_log(unserved_api, worker_pool, receiver, session_factory):
    worker_pool.ensure(1)
    path = unique_path("private")
    with unserved_api.client() as http:
        owner, stranger = make_owner(session_factory, http), make_owner(session_factory, http)
        job = http.post("/v1/jobs", headers=owner.headers, json={
            "task": "caption", "image": data_url(shape_png(7004)), "callback_url": receiver.url + path}).json()
        http.post(f"/v1/jobs/{job['id']}/cancel", headers=owner.headers)
        wait_until(lambda: deliveries(http, owner, subject_id=job["id"]), timeout=30, what="the owner's delivery")
        assert deliveries(http, stranger) == []
        assert deliveries(http, stranger, subject_id=job["id"]) == []
        unauthenticated = http.get("/v1/webhooks/deliveries")
    assert unauthenticated.status_code == 401


@pytest.mark.timeout(60)
def test_a_private_address_is_refused_at_delivery_time(unserved_api, worker_pool, receiver, session_factory):
    worker_pool.ensure(1)
    port = receiver.url.rsplit(":", 1)[1]
    with unserved_api.client() as http:
        owner = make_owner(session_factory, http)
        # Loopback, but not the 127.0.0.1/32 the test workers allow; accepted at submission (DNS decides later).
        job = http.post("/v1/jobs", headers=owner.headers, json={
            "task": "caption", "image": data_url(shape_png(7005)), "callback_url": f"http://127.0.0.2:{port}/x"})
        assert job.status_code == 202, job.text
        http.post(f"/v1/jobs/{job.json()['id']}/cancel", headers=owner.headers)
        [delivery] = wait_until(lambda: deliveries(http, owner, status="failed"), timeout=30,
                                what="the delivery refused")
    assert delivery["attempts"] == 1 and delivery["last_status_code"] is None
    assert delivery["last_error"].startswith("refused:") and "127.0.0.2" in delivery["last_error"]


BAD_URLS = {
    "not a URL": "not a url",
    "another scheme": "ftp://hooks.example.com/x",
    "credentials": "https://user:password@hooks.example.com/x",
    "no host": "http:///path",
    "too long": "https://hooks.example.com/" + "a" * 2000,
    "a control character": "https://hooks.example.com/\x07",
    "not a string": 12,
}


@pytest.mark.parametrize("value", BAD_URLS.values(), ids=BAD_URLS.keys())
def test_bad_callback_urls_are_refused_naming_the_field(unserved_api, session_factory, value):
    image = data_url(shape_png(7006))
    with unserved_api.client() as http:
        owner = make_owner(session_factory, http)
        refusals = {
            "callback_url": http.post("/v1/jobs", headers=owner.headers,
                                      json={"task": "caption", "image": image, "callback_url": value}),
            "webhook_url": http.patch("/v1/tenant", headers=owner.headers, json={"webhook_url": value}),
        }
        batch = http.post("/v1/batches", headers=owner.headers,
                          json={"task": "caption", "items": [{"image": image}], "callback_url": value})
        listed = http.get("/v1/jobs", headers=owner.headers).json()["data"]
    refusals["callback_url "] = batch
    for field, response in refusals.items():
        assert 400 <= response.status_code < 500, (field, response.text)
        assert response.json()["error"]["field"] == field.strip(), response.text
    assert listed == []  # nothing was stored


def test_a_bad_multipart_callback_and_a_callback_on_a_batch_item_are_refused(unserved_api, session_factory):
    with unserved_api.client() as http:
        owner = make_owner(session_factory, http)
        form = http.post("/v1/jobs", headers=owner.headers, data={"task": "caption", "callback_url": "gopher://x"},
                         files={"image": ("a.png", shape_png(7007), "image/png")})
        item = http.post("/v1/batches", headers=owner.headers, json={"task": "caption", "items": [
            {"image": data_url(shape_png(7008)), "callback_url": "https://hooks.example.com/x"}]})
    assert form.status_code == 422 and form.json()["error"]["field"] == "callback_url", form.text
    assert item.status_code == 422 and item.json()["error"]["field"] == "items[0].callback_url", item.text


def test_setting_a_first_webhook_url_shows_a_new_secret_once(unserved_api, session_factory):
    from db.queries import create_api_key, get_or_create_tenant

    with session_factory.begin() as session:
        tenant = get_or_create_tenant(session, name=f"tenant-{secrets.token_hex(4)}")
        _, token = create_api_key(session, tenant_id=tenant.id, name="owner", scopes=["admin"])
    headers = {"Authorization": f"Bearer {token}"}
    with unserved_api.client() as http:
        before = http.get("/v1/tenant", headers=headers).json()
        first = http.patch("/v1/tenant", headers=headers, json={"webhook_url": "https://hooks.example.com/a"}).json()
        again = http.patch("/v1/tenant", headers=headers, json={"webhook_url": "https://hooks.example.com/b"}).json()
        rotated = http.post("/v1/tenant/webhook-secret", headers=headers).json()["webhook_secret"]
        after = http.get("/v1/tenant", headers=headers).json()
        removed = http.patch("/v1/tenant", headers=headers, json={"webhook_url": None}).json()
    assert before["webhook_secret_set"] is False and before["webhook_url"] is None
    assert first["webhook_secret"].startswith("whsec_") and first["webhook_secret_set"] is True
    assert again["webhook_secret"] is None and again["webhook_url"] == "https://hooks.example.com/b"
    assert rotated.startswith("whsec_") and rotated != first["webhook_secret"]
    assert after["webhook_secret"] is None and after["webhook_secret_set"] is True
    assert removed["webhook_url"] is None
