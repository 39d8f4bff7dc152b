"""Chat completions and moderations with no worker serving: refusals name the field, waits end naming the job,
moderation fails closed; the moderation policy's versions and audit trail."""
from __future__ import annotations

import json
import uuid

import openai
import pytest
from sqlalchemy import select

from db.models import AuditEvent, Job, ModerationDecision
from image_factory import data_url, shape_png

WAIT_SECONDS = 1.5


@pytest.fixture(scope="module")
def waiting_api(start_api):
    """An API no worker serves, with short waits, so the timeout and fail-closed paths run in seconds."""
    return start_api("waiting-api", LENSQ_QUEUE_PREFIX="unserved-openai", LENSQ_OPENAI_WAIT_SECONDS=str(WAIT_SECONDS),
                     LENSQ_MODERATION_WAIT_SECONDS=str(WAIT_SECONDS))


@pytest.fixture
def client(waiting_api, tenant) -> openai.OpenAI:
    return openai.OpenAI(base_url=waiting_api.url + "/v1", api_key=tenant.token, max_retries=0, timeout=30)


def image_part(index: int = 0) -> dict:
    return {"type": "image_url", "image_url": {"url": data_url(shape_png(index))}}


def user(*parts) -> list[dict]:
    return [{"role": "user", "content": list(parts)}]


def refusal(call) -> tuple[int, str, str]:
    with pytest.raises(openai.APIStatusError) as caught:
        call()
    error = caught.value.response.json()["error"]
    return caught.value.status_code, error["field"], error["message"]


def test_chat_refusals_name_the_field(client):
    create = client.chat.completions.create
    text = {"type": "text", "text": "what shape?"}
    cases = [
        (dict(messages=user(image_part(), text), temperature=0.7), 400, "temperature"),
        (dict(messages=user(image_part(), text), n=2), 400, "n"),
        (dict(messages=user(image_part(), text), max_tokens=0), 400, "max_tokens"),
        (dict(messages=[{"role": "user", "content": "what shape?"}]), 400, "messages[0].content"),
        (dict(messages=[{"role": "system", "content": "be brief"}]), 400, "messages"),
        (dict(messages=[]), 400, "messages"),
        (dict(messages=user(image_part(), image_part(1))), 400, "messages[0].content[1].image_url.url"),
        (dict(messages=user({"type": "input_audio", "input_audio": {}})), 400, "messages[0].content[0].type"),
        (dict(messages=user({"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}})), 422,
         "messages[0].content[0].image_url.url"),
        (dict(messages=user({"type": "image_url", "image_url": {"url": "https://example.com/a.png"}})), 403,
         "messages[0].content[0].image_url.url"),  # image URLs are off for this tenant
        (dict(messages=user(image_part(), {"type": "text", "text": "x" * 600})), 422, "messages[0].content"),
    ]
    for kwargs, status, field in cases:
        got = refusal(lambda: create(model="lensq", **kwargs))
        assert got[:2] == (status, field), (kwargs.keys(), got)


def test_chat_answers_409_naming_the_job_when_no_worker_finishes_it(client, waiting_api, tenant):
    status, field, message = refusal(lambda: client.chat.completions.create(
        model="lensq", messages=user(image_part(2), {"type": "text", "text": "What color is the shape?"})))
    assert (status, field) == (409, "job_id") and "poll GET /v1/jobs/" in message
    job_id = message.split()[1]
    with waiting_api.client(tenant) as http:
        job = http.get(f"/v1/jobs/{job_id}").json()
    assert (job["task"], job["params"], job["status"]) == ("vqa", {"question": "What color is the shape?"}, "queued")


@pytest.mark.parametrize("text", [None, "Describe this image.", "Write a caption for it"])
def test_no_question_or_a_request_to_describe_is_a_caption_job(waiting_api, tenant, text):
    parts = [image_part(3)] + ([{"type": "text", "text": text}] if text else [])
    with waiting_api.client(tenant) as http:
        response = http.post("/v1/chat/completions", json={"model": "m", "messages": user(*parts)})
        assert response.status_code == 409
        job = http.get(f"/v1/jobs/{response.headers['X-LensQ-Job-Id']}").json()
    assert (job["task"], job["params"]) == ("caption", {})


def test_a_follow_up_question_keeps_the_earlier_image(waiting_api, tenant, session_factory):
    messages = [{"role": "system", "content": "You look at images."}, *user(image_part(4)),
                {"role": "assistant", "content": "a red circle"}, {"role": "user", "content": "is it big?"}]
    with waiting_api.client(tenant) as http:
        response = http.post("/v1/chat/completions", json={"messages": messages})
    assert response.status_code == 409
    with session_factory() as session:
        job = session.get(Job, uuid.UUID(response.headers["X-LensQ-Job-Id"]))
        assert (job.task, job.params) == ("vqa", {"question": "is it big?"})


def test_a_stream_that_times_out_ends_with_an_error_event(waiting_api, tenant):
    body = {"model": "m", "stream": True, "messages": user(image_part(5))}
    with waiting_api.client(tenant) as http:
        with http.stream("POST", "/v1/chat/completions", json=body) as response:
            assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
            events = [line.removeprefix("data: ") for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    assert json.loads(events[0])["error"]["field"] == "job_id"


def stored_decision(session_factory, decision_id: str) -> ModerationDecision:
    with session_factory() as session:
        return session.get(ModerationDecision, uuid.UUID(decision_id))


def test_moderation_fails_closed_when_no_worker_scores_it(client, session_factory):
    result = client.moderations.create(input=[{"type": "text", "text": "you will regret this"}, image_part(6)])
    [item] = result.results
    assert item.flagged is True
    categories, scores = item.categories.to_dict(), item.category_scores.to_dict()
    assert set(categories) == {"violence", "sexual", "hate", "negative_sentiment"}
    assert all(categories.values()) and all(score is None for score in scores.values())
    assert item.category_applied_input_types.to_dict()["negative_sentiment"] == ["image", "text"]
    extra = item.model_extra
    assert "still queued" in extra["failure"]
    row = stored_decision(session_factory, extra["decision_id"])
    assert (row.flagged, row.review_status, row.policy_version, row.text) == (True, "pending", 0, "you will regret this")
    assert row.failure == extra["failure"] and len(row.job_ids) == 4 and row.image_sha256
    with session_factory() as session:  # the verdict is given: its jobs are not left to run later
        statuses = session.scalars(select(Job.status).where(Job.id.in_([uuid.UUID(j) for j in row.job_ids]))).all()
    assert set(statuses) == {"cancelled"}


def test_moderation_refusals_name_the_field(client):
    cases = [(dict(input=[]), "input"), (dict(input=["a", {"type": "text", "text": "b"}]), "input"),
             (dict(input=[{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]),
              "input[0].image_url.url"),
             (dict(input=[image_part(), image_part(1)]), "input[1]"),
             (dict(input=[{"type": "video"}]), "input[0]"), (dict(input=["x" * 6000]), "input[0]")]
    for kwargs, field in cases:
        status, got, _ = refusal(lambda: client.moderations.create(**kwargs))
        assert 400 <= status < 500 and got == field, (kwargs, status, got)


POLICY = {"categories": {
    "weapons": {"labels": ["a photo of a gun", "a photo of a knife"], "against": ["a photo of a cup", "a landscape"],
                "threshold": 0.7},
    "hostile": {"source": "sentiment", "threshold": 0.95, "description": "very negative posts"}}}


def test_policy_versions_with_audit_events(waiting_api, make_tenant, session_factory):
    from db.queries import create_api_key

    tenant = make_tenant()
    with session_factory.begin() as session:
        _, admin_token = create_api_key(session, tenant_id=tenant.id, name="admin", scopes=["admin"])
    admin = {"Authorization": f"Bearer {admin_token}"}
    with waiting_api.client(tenant) as http:
        default = http.get("/v1/moderation/policy").json()
        assert (default["version"], default["default"]) == (0, True) and "violence" in default["categories"]
        assert http.put("/v1/moderation/policy", json=POLICY).status_code == 403  # submit/read key: not admin
        first = http.put("/v1/moderation/policy", json=POLICY, headers=admin).json()
        second = http.put("/v1/moderation/policy", json={"categories": {"hostile": POLICY["categories"]["hostile"]}},
                          headers=admin).json()
        assert (first["version"], second["version"]) == (1, 2)
        assert http.get("/v1/moderation/policy").json()["categories"] == second["categories"]
        bad = http.put("/v1/moderation/policy", headers=admin, json={"categories": {
            "weapons": {**POLICY["categories"]["weapons"], "threshold": 2}}})
        assert (bad.status_code, bad.json()["error"]["field"]) == (422, "categories.weapons.threshold")
        repeated = http.put("/v1/moderation/policy", headers=admin, json={"categories": {
            "weapons": {**POLICY["categories"]["weapons"], "against": ["a photo of a gun"]}}})
        assert repeated.status_code == 422 and repeated.json()["error"]["field"].startswith("categories.weapons.")
        # Text only under a sentiment policy: scored over the placeholder image, so the text is what applies.
        verdict = http.post("/v1/moderations", json={"input": "hello"}).json()["results"][0]
    with session_factory() as session:
        events = session.scalars(select(AuditEvent).where(AuditEvent.tenant_id == tenant.id)
                                 .order_by(AuditEvent.created_at)).all()
    assert [(e.kind, e.subject_id, e.detail["version"]) for e in events] == [
        ("moderation.policy", "policy:v1", 1), ("moderation.policy", "policy:v2", 2)]
    assert events[0].actor.startswith("key:lq_") and events[1].detail["categories"] == second["categories"]
    assert verdict["policy_version"] == 2 and verdict["category_applied_input_types"] == {"hostile": ["text"]}
    assert verdict["flagged"] is True and verdict["categories"] == {"hostile": True}  # no worker: fail closed


def test_bad_json_bodies_name_the_body(waiting_api, tenant):
    with waiting_api.client(tenant) as http:
        for path in ("/v1/chat/completions", "/v1/moderations"):
            response = http.post(path, content=b"{nope", headers={"content-type": "application/json"})
            assert (response.status_code, response.json()["error"]["field"]) == (400, "body"), path
