"""/v1/models and the promotion gate through the real API, and `model` on jobs, batches and chat completions."""
from __future__ import annotations

import json
import secrets
import uuid

import httpx
import pytest

from db.models import KEY_SCOPES, Job
from image_factory import data_url, shape_png
from model_version_rows import seed_version, version_eval

IMAGE = data_url(shape_png(21))


@pytest.fixture
def owner(session_factory) -> dict:
    """A new tenant with a key of every scope (promotion needs admin)."""
    from db.queries import create_api_key, get_or_create_tenant

    with session_factory.begin() as session:
        tenant = get_or_create_tenant(session, name=f"tenant-{secrets.token_hex(4)}")
        _, token = create_api_key(session, tenant_id=tenant.id, name="owner", scopes=KEY_SCOPES)
        return {"id": tenant.id, "name": tenant.name, "token": token, "headers": {"Authorization": f"Bearer {token}"}}


@pytest.fixture
def http(unserved_api, owner):
    with httpx.Client(base_url=unserved_api.url, headers=owner["headers"], timeout=60) as client:
        yield client


def _refused(response: httpx.Response, status: int, field: str) -> str:
    assert response.status_code == status, response.text
    assert response.json()["error"]["field"] == field, response.text
    return response.json()["error"]["message"]


def _stored_version_id(session_factory, job_id: str) -> uuid.UUID | None:
    with session_factory() as session:
        return session.get(Job, uuid.UUID(job_id)).model_version_id


def test_lists_and_reads_base_models_and_the_tenants_versions(http, owner, session_factory):
    older = seed_version(session_factory, owner["id"], suffix="old", evaluation=version_eval(0.7, 0.5))
    newer = seed_version(session_factory, owner["id"], task="vqa", suffix="new", config={"method": "lora", "r": 8})
    listed = http.get("/v1/models").json()
    assert listed["object"] == "list"
    assert [m["id"] for m in listed["data"]] == ["lensq-tiny", newer, older]
    base, new, old = listed["data"]
    assert (base["owned_by"], base["task"], base["is_default"]) == ("lensq", None, False)
    assert (new["task"], new["base_model"], new["is_default"], new["object"]) == ("vqa", "lensq-tiny", False, "model")
    assert old["eval"] == {"metric": 0.7, "baseline_model": "lensq-tiny", "baseline_metric": 0.5, "best_step": 10,
                           "steps": 20, "test_n": 24}
    assert old["config"] is None  # lists carry the summary; the version itself carries config and the whole eval
    one = http.get(f"/v1/models/{newer}").json()
    assert one["config"] == {"method": "lora", "r": 8} and one["eval"]["splits"]["test"] == 24
    assert http.get("/v1/models/lensq-tiny").json()["id"] == "lensq-tiny"
    _refused(http.get("/v1/models/ft:lensq-tiny:nobody:custom:00000000"), 404, "model")


def test_another_tenants_version_is_a_404_everywhere(http, unserved_api, owner, session_factory, tenant):
    name = seed_version(session_factory, owner["id"])
    with unserved_api.client(tenant) as stranger:
        assert [m["id"] for m in stranger.get("/v1/models").json()["data"]] == ["lensq-tiny"]
        message = _refused(stranger.get(f"/v1/models/{name}"), 404, "model")
        assert name not in message
        _refused(stranger.post("/v1/jobs", json={"task": "sentiment", "image": IMAGE, "model": name}), 404, "model")
        assert stranger.get("/v1/jobs").json()["data"] == []
    assert http.get(f"/v1/models/{name}").status_code == 200


def _audit(http: httpx.Client, kind: str) -> list[dict]:
    return http.get("/v1/audit/events", params={"kind": kind}).json()["data"]


def test_the_gate_promotes_a_version_that_beats_the_default_and_refuses_one_that_does_not(http, owner,
                                                                                          session_factory):
    better = seed_version(session_factory, owner["id"], evaluation=version_eval(0.9, 0.6))
    worse = seed_version(session_factory, owner["id"], evaluation=version_eval(0.55, 0.6))
    message = _refused(http.post(f"/v1/models/{worse}/promote", json={}), 409, "model")
    assert "0.5500" in message and "0.6000" in message and "force" in message
    promoted = http.post(f"/v1/models/{better}/promote", json={"reason": "beats the base"})
    assert promoted.status_code == 200, promoted.text
    body = promoted.json()
    assert (body["model"]["id"], body["model"]["is_default"], body["previous"], body["forced"]) == (
        better, True, "lensq-tiny", False)
    assert [m["is_default"] for m in http.get("/v1/models").json()["data"] if m["id"] == better] == [True]
    [event] = _audit(http, "model.promote")
    assert (event["subject_id"], event["id"]) == (better, body["audit_event_id"])
    assert event["detail"]["gate"] == "passed" and event["detail"]["previous"] == "lensq-tiny"
    # compared with the base, but the default is now `better`: a stale comparison is refused even with a high score
    stale = seed_version(session_factory, owner["id"], evaluation=version_eval(0.99, 0.6))
    assert better in _refused(http.post(f"/v1/models/{stale}/promote"), 409, "model")
    fresh = seed_version(session_factory, owner["id"], evaluation=version_eval(0.95, 0.9, baseline=better))
    # a force the gate did not need is an ordinary promotion (its reason still recorded)
    ordinary = http.post(f"/v1/models/{fresh}/promote", json={"force": True, "reason": "sure"}).json()
    assert (ordinary["previous"], ordinary["forced"]) == (better, False)
    assert [e["detail"]["reason"] for e in _audit(http, "model.promote")] == ["sure", "beats the base"]
    assert _audit(http, "model.promote.forced") == []
    assert "already the default" in _refused(http.post(f"/v1/models/{fresh}/promote"), 409, "model")


def test_forcing_past_the_gate_needs_a_reason_and_is_audited(http, owner, session_factory):
    worse = seed_version(session_factory, owner["id"], task="classify", evaluation=version_eval(0.4, 0.6))
    _refused(http.post(f"/v1/models/{worse}/promote", json={"force": True}), 400, "reason")
    _refused(http.post(f"/v1/models/{worse}/promote", json={"force": True, "reason": "  "}), 422, "reason")
    _refused(http.post(f"/v1/models/{worse}/promote", json={"force": "yes please"}), 422, "force")
    _refused(http.post("/v1/models/lensq-tiny/promote", json={}), 400, "model")
    assert _audit(http, "model.promote.forced") == []
    forced = http.post(f"/v1/models/{worse}/promote", json={"force": True, "reason": "labels changed"}).json()
    assert (forced["forced"], forced["model"]["is_default"], forced["task"]) == (True, True, "classify")
    [event] = _audit(http, "model.promote.forced")
    assert event["subject_id"] == worse and event["detail"]["reason"] == "labels changed"
    assert event["detail"]["gate"].startswith(worse) and event["actor"].startswith("lq_")


def test_jobs_name_a_version_a_base_model_or_get_the_tenants_default(http, owner, session_factory, make_tenant):
    sentiment = seed_version(session_factory, owner["id"], evaluation=version_eval(0.9, 0.5))
    vqa = seed_version(session_factory, owner["id"], task="vqa")
    job = {"task": "sentiment", "image": IMAGE, "text": "great day"}
    _refused(http.post("/v1/jobs", json={**job, "model": "ft:lensq-tiny:x:y:12345678"}), 404, "model")
    assert "vqa" in _refused(http.post("/v1/jobs", json={**job, "model": vqa}), 400, "model")
    _refused(http.post("/v1/jobs", json={**job, "model": ""}), 422, "model")
    _refused(http.post("/v1/jobs", json={**job, "model": 7}), 422, "model")
    named = http.post("/v1/jobs", json={**job, "model": sentiment}).json()
    assert named["model"] == sentiment and named["model_version"] is None
    assert _stored_version_id(session_factory, named["id"]) is not None
    before = http.post("/v1/jobs", json=job, headers={"Idempotency-Key": "before-promotion"})
    assert before.json()["model"] == "lensq-tiny" and _stored_version_id(session_factory, before.json()["id"]) is None
    assert http.post(f"/v1/models/{sentiment}/promote").status_code == 200
    by_default = http.post("/v1/jobs", json=job).json()
    assert by_default["model"] == sentiment
    assert http.get(f"/v1/jobs/{by_default['id']}").json()["model"] == sentiment
    assert http.post("/v1/jobs", json={**job, "model": "lensq-tiny"}).json()["model"] == "lensq-tiny"
    # a request that names no model keeps its idempotency hash: the retry is a replay, not a conflict
    replay = http.post("/v1/jobs", json=job, headers={"Idempotency-Key": "before-promotion"})
    assert (replay.status_code, replay.json()["id"], replay.json()["model"]) == (200, before.json()["id"],
                                                                                  "lensq-tiny")
    caption = http.post("/v1/jobs", json={"task": "caption", "image": IMAGE}).json()
    assert caption["model"] == "lensq-tiny"  # the default is per task
    form = http.post("/v1/jobs", data={"task": "vqa", "question": "what shape?", "model": vqa},
                     files={"image": ("a.png", shape_png(22), "image/png")})
    assert form.status_code == 202 and form.json()["model"] == vqa


def test_batches_name_a_model_for_all_items_or_per_item(http, owner, session_factory):
    sentiment = seed_version(session_factory, owner["id"])
    vqa = seed_version(session_factory, owner["id"], task="vqa")
    items = [{"image": IMAGE, "text": "a"}, {"image": IMAGE, "text": "b", "model": "lensq-tiny"},
             {"image": IMAGE, "task": "vqa", "question": "which shape?", "model": vqa}]
    batch = http.post("/v1/batches", json={"task": "sentiment", "model": sentiment, "items": items})
    assert batch.status_code == 202, batch.text
    jobs = sorted(http.get("/v1/jobs", params={"batch_id": batch.json()["id"]}).json()["data"],
                  key=lambda j: j["params"].get("text", "z"))
    assert [j["model"] for j in jobs] == [sentiment, "lensq-tiny", vqa]
    bad = [{"image": IMAGE, "text": "a"}, {"image": IMAGE, "text": "b", "model": vqa}]
    _refused(http.post("/v1/batches", json={"task": "sentiment", "items": bad}), 400, "items[1].model")
    lines = "\n".join(json.dumps(item) for item in items[:2])
    form = http.post("/v1/batches", data={"task": "sentiment", "model": "ft:lensq-tiny:x:y:00000000"},
                     files={"file": ("items.jsonl", lines.encode(), "application/jsonl")})
    _refused(form, 404, "items[0].model")


def test_chat_completions_name_a_version_by_its_name(http, owner, session_factory, tenant, unserved_api):
    sentiment = seed_version(session_factory, owner["id"])
    message = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": IMAGE}},
                                            {"type": "text", "text": "what shape is it?"}]}]
    _refused(http.post("/v1/chat/completions", json={"model": sentiment, "messages": message}), 400, "model")
    _refused(http.post("/v1/chat/completions", json={"model": "ft:lensq-tiny:x:y:0", "messages": message}), 404,
             "model")
    with unserved_api.client(tenant) as stranger:
        _refused(stranger.post("/v1/chat/completions", json={"model": sentiment, "messages": message}), 404, "model")


def test_the_openai_client_lists_and_retrieves_models(unserved_api, owner, session_factory):
    import openai

    name = seed_version(session_factory, owner["id"], task="caption")
    client = openai.OpenAI(base_url=unserved_api.url + "/v1", api_key=owner["token"], max_retries=0, timeout=30)
    assert [model.id for model in client.models.list()] == ["lensq-tiny", name]
    retrieved = client.models.retrieve(name)
    assert (retrieved.id, retrieved.owned_by, retrieved.object) == (name, owner["name"], "model")
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("ft:lensq-tiny:someone:custom:00000000")


def test_demoting_the_default_puts_its_task_back_on_the_base_model(http, owner, session_factory):
    version = seed_version(session_factory, owner["id"], task="vqa")
    job = {"task": "vqa", "image": IMAGE, "question": "what shape?"}
    _refused(http.delete(f"/v1/models/{version}/default"), 409, "model")
    assert http.post(f"/v1/models/{version}/promote").status_code == 200
    assert http.post("/v1/jobs", json=job).json()["model"] == version
    _refused(http.delete(f"/v1/models/{version}/default", params={"reason": "\x07"}), 422, "reason")
    demoted = http.delete(f"/v1/models/{version}/default", params={"reason": "answers drifted"})
    assert demoted.status_code == 200, demoted.text
    assert (demoted.json()["now"], demoted.json()["model"]["is_default"]) == ("lensq-tiny", False)
    assert http.post("/v1/jobs", json=job).json()["model"] == "lensq-tiny"
    [event] = _audit(http, "model.demote")
    assert (event["subject_id"], event["detail"]["reason"], event["id"]) == (
        version, "answers drifted", demoted.json()["audit_event_id"])
    _refused(http.delete(f"/v1/models/{version}/default"), 409, "model")
