"""POST/GET /v1/jobs, listing with a cursor, cancel, Idempotency-Key — against the API under uvicorn."""
from __future__ import annotations

import pytest
from sqlalchemy import func, select

from db.models import Image
from image_factory import data_url, shape_png


@pytest.fixture
def client(unserved_api, tenant):
    with unserved_api.client(tenant) as http:
        yield http


def test_json_job_is_queued_and_readable(client):
    response = client.post("/v1/jobs", json={"task": "vqa", "image": data_url(shape_png(0)), "question": "what shape?",
                                             "ref": "mine-1", "priority": 3})
    assert response.status_code == 202, response.text
    job = response.json()
    assert (job["status"], job["task"], job["params"], job["ref"], job["priority"]) == (
        "queued", "vqa", {"question": "what shape?"}, "mine-1", 3)
    again = client.get(f"/v1/jobs/{job['id']}")
    assert again.status_code == 200 and again.json() == job


def test_multipart_job_with_repeated_and_json_labels(client):
    png = shape_png(1)
    repeated = client.post("/v1/jobs", files={"image": ("s.png", png, "image/png")},
                           data={"task": "classify", "labels": ["circle", "square"]})
    as_json = client.post("/v1/jobs", files={"image": ("s.png", png, "image/png")},
                          data={"task": "classify", "labels": '["circle", "square", "triangle"]'})
    assert repeated.status_code == 202 and as_json.status_code == 202
    assert repeated.json()["params"] == {"labels": ["circle", "square"]}
    assert as_json.json()["params"] == {"labels": ["circle", "square", "triangle"]}


def test_sentiment_text_is_optional_and_caption_takes_nothing(client):
    sentiment = client.post("/v1/jobs", json={"task": "sentiment", "image": data_url(shape_png(2))})
    caption = client.post("/v1/jobs", json={"task": "caption", "image": data_url(shape_png(2))})
    assert sentiment.json()["params"] == {"text": ""} and caption.json()["params"] == {}


def test_the_same_image_is_stored_once(client, tenant, session_factory):
    url = data_url(shape_png(3))
    first = client.post("/v1/jobs", json={"task": "caption", "image": url}).json()
    second = client.post("/v1/jobs", json={"task": "vqa", "image": url, "question": "colour?"}).json()
    assert first["id"] != second["id"] and first["image_sha256"] == second["image_sha256"]
    with session_factory() as session:
        count = session.scalar(select(func.count()).select_from(Image).where(Image.tenant_id == tenant.id))
    assert count == 1


def test_list_filters_and_paginates_with_a_cursor(client):
    created = [client.post("/v1/jobs", json={"task": "caption", "image": data_url(shape_png(i))}).json()["id"]
               for i in range(7)]
    client.post("/v1/jobs", json={"task": "vqa", "image": data_url(shape_png(0)), "question": "q"})
    seen, cursor = [], None
    for _ in range(5):
        params = {"task": "caption", "status": "queued", "limit": 3, **({"cursor": cursor} if cursor else {})}
        page = client.get("/v1/jobs", params=params).json()
        seen += [job["id"] for job in page["data"]]
        assert all(job["task"] == "caption" for job in page["data"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(created))


def test_list_by_batch(client):
    batch = client.post("/v1/batches", json={"task": "caption", "items": [
        {"image": data_url(shape_png(i))} for i in range(3)]}).json()
    page = client.get("/v1/jobs", params={"batch_id": batch["id"]}).json()
    assert len(page["data"]) == 3 and {job["batch_id"] for job in page["data"]} == {batch["id"]}


def test_cancel_a_queued_job_then_again_is_409(client):
    job = client.post("/v1/jobs", json={"task": "caption", "image": data_url(shape_png(4))}).json()
    cancelled = client.post(f"/v1/jobs/{job['id']}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    again = client.post(f"/v1/jobs/{job['id']}/cancel")
    assert again.status_code == 409 and again.json()["error"]["field"] == "status"


def test_idempotency_key_same_body_same_job_other_body_409(client):
    body = {"task": "vqa", "image": data_url(shape_png(5)), "question": "what colour?"}
    key = {"Idempotency-Key": "order-42"}
    first = client.post("/v1/jobs", json=body, headers=key)
    replay = client.post("/v1/jobs", json=body, headers=key)
    assert (first.status_code, replay.status_code) == (202, 200)
    assert replay.json()["id"] == first.json()["id"]
    other = client.post("/v1/jobs", json={**body, "question": "what shape?"}, headers=key)
    assert other.status_code == 409
    assert other.json()["error"]["field"] == "Idempotency-Key"
    as_form = client.post("/v1/jobs", files={"image": ("x.png", shape_png(5), "image/png")},
                          data={"task": "vqa", "question": "what colour?"}, headers=key)
    assert as_form.status_code == 200 and as_form.json()["id"] == first.json()["id"]


def test_idempotency_keys_are_per_tenant(unserved_api, make_tenant):
    body = {"task": "caption", "image": data_url(shape_png(6))}
    ids = []
    for tenant in (make_tenant(), make_tenant()):
        with unserved_api.client(tenant) as http:
            response = http.post("/v1/jobs", json=body, headers={"Idempotency-Key": "shared"})
            assert response.status_code == 202
            ids.append(response.json()["id"])
    assert ids[0] != ids[1]


def test_idempotent_batches(client):
    body = {"task": "caption", "items": [{"image": data_url(shape_png(i))} for i in range(2)]}
    key = {"Idempotency-Key": "batch-1"}
    first = client.post("/v1/batches", json=body, headers=key)
    replay = client.post("/v1/batches", json=body, headers=key)
    other = client.post("/v1/batches", json={**body, "task": "sentiment"}, headers=key)
    assert (first.status_code, replay.status_code, other.status_code) == (202, 200, 409)
    assert first.json()["id"] == replay.json()["id"]


def test_concurrent_retries_with_one_key_make_one_job(unserved_api, tenant):
    from concurrent.futures import ThreadPoolExecutor

    body = {"task": "caption", "image": data_url(shape_png(7))}

    def post(_: int):
        with unserved_api.client(tenant) as http:
            return http.post("/v1/jobs", json=body, headers={"Idempotency-Key": "racing"})

    with ThreadPoolExecutor(max_workers=8) as pool:
        responses = list(pool.map(post, range(8)))
    assert sorted(r.status_code for r in responses) == [200] * 7 + [202]
    assert len({r.json()["id"] for r in responses}) == 1


def test_keyed_jobs_arriving_together_are_each_stored_under_their_own_key(unserved_api, tenant, session_factory):
    """Jobs sent with Idempotency-Keys are stored together like any single jobs (services.submission.
    SingleJobIntake); each still gets its own job, and each retry its replay (200), or its 409 with another body."""
    from concurrent.futures import ThreadPoolExecutor

    from db.models import Job

    bodies = [{"task": "caption", "image": data_url(shape_png(400 + i)), "ref": f"t{i}"} for i in range(24)]

    def post(index: int, body: dict | None = None):
        with unserved_api.client(tenant) as http:
            return http.post("/v1/jobs", json=body or bodies[index], headers={"Idempotency-Key": f"together-{index}"})

    with ThreadPoolExecutor(max_workers=12) as pool:
        first = list(pool.map(post, range(24)))
        replays = list(pool.map(post, range(24)))
        others = list(pool.map(lambda i: post(i, {**bodies[i], "ref": "another"}), range(24)))
    assert [r.status_code for r in first] == [202] * 24
    assert [r.status_code for r in replays] == [200] * 24
    assert [r.json()["id"] for r in replays] == [r.json()["id"] for r in first]
    assert {(r.status_code, r.json()["error"]["field"]) for r in others} == {(409, "Idempotency-Key")}
    with session_factory() as session:
        stored = dict(session.execute(select(Job.idempotency_key, Job.ref).where(
            Job.tenant_id == tenant.id, Job.idempotency_key.like("together-%"))).all())
    assert stored == {f"together-{i}": f"t{i}" for i in range(24)}


def test_a_key_and_its_retry_with_another_body_arriving_together(unserved_api, tenant):
    """A key's retry waits for the next group, as if sent later: one of the two is stored, the other gets a 409."""
    from concurrent.futures import ThreadPoolExecutor

    def post(question: str):
        with unserved_api.client(tenant) as http:
            return http.post("/v1/jobs", json={"task": "vqa", "image": data_url(shape_png(450)), "question": question},
                             headers={"Idempotency-Key": "pair"})

    with ThreadPoolExecutor(max_workers=8) as pool:
        responses = list(pool.map(post, ["what shape?", "what colour?"] * 4))
    codes = sorted(r.status_code for r in responses)
    assert codes.count(202) == 1 and set(codes) <= {200, 202, 409} and 409 in codes
    stored = next(r for r in responses if r.status_code == 202).json()
    assert all(r.json()["id"] == stored["id"] for r in responses if r.status_code == 200)


def test_concurrent_single_jobs_are_each_stored_or_refused_on_their_own(unserved_api, tenant, session_factory):
    """Jobs arriving together are stored together (services.submission.SingleJobIntake): each still gets its own
    answer, its own row and its own refusal (an unknown model), and none is lost or answered twice."""
    from concurrent.futures import ThreadPoolExecutor

    from db.models import Job

    def post(index: int):
        body = {"task": "vqa", "image": data_url(shape_png(300 + index)), "question": f"q{index}", "ref": f"r{index}"}
        if index % 5 == 0:
            body["model"] = "ft:no-such-model"
        with unserved_api.client(tenant) as http:
            return index, http.post("/v1/jobs", json=body)

    with ThreadPoolExecutor(max_workers=16) as pool:
        responses = dict(pool.map(post, range(40)))
    for index, response in responses.items():
        if index % 5 == 0:
            assert response.status_code == 404 and response.json()["error"]["field"] == "model", response.text
        else:
            assert response.status_code == 202, response.text
            assert (response.json()["ref"], response.json()["params"]) == (f"r{index}", {"question": f"q{index}"})
    with session_factory() as session:
        stored = {str(job_id): ref for job_id, ref in
                  session.execute(select(Job.id, Job.ref).where(Job.tenant_id == tenant.id)).all()}
    answered = {r.json()["id"]: r.json()["ref"] for r in responses.values() if r.status_code == 202}
    assert answered.items() <= stored.items() and len(answered) == 32
