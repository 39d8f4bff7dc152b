"""POST /v1/batches (JSON and JSONL upload), counts and progress, results as JSONL."""
from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select

from db.models import Job
from image_factory import data_url, shape_png


@pytest.fixture
def client(unserved_api, tenant):
    with unserved_api.client(tenant) as http:
        yield http


def test_json_batch_with_per_item_tasks(client):
    items = [{"image": data_url(shape_png(0)), "ref": "a"},
             {"image": data_url(shape_png(1)), "task": "vqa", "question": "what shape?", "ref": "b"},
             {"image": data_url(shape_png(2)), "task": "classify", "labels": ["x", "y"], "ref": "c"}]
    response = client.post("/v1/batches", json={"task": "caption", "items": items})
    assert response.status_code == 202, response.text
    batch = response.json()
    assert batch["total"] == 3 and batch["counts"]["queued"] == 3 and batch["progress"] == 0.0
    assert not batch["finished"]
    lines = client.get(batch["results_url"])
    assert lines.headers["content-type"].startswith("application/x-ndjson")
    rows = [json.loads(line) for line in lines.text.splitlines()]
    assert [(r["index"], r["ref"], r["task"], r["status"]) for r in rows] == [
        (0, "a", "caption", "queued"), (1, "b", "vqa", "queued"), (2, "c", "classify", "queued")]


def test_jsonl_upload(client):
    lines = "\n".join(json.dumps({"image": data_url(shape_png(i)), "ref": f"line-{i}"}) for i in range(4))
    response = client.post("/v1/batches", files={"file": ("items.jsonl", lines.encode(), "application/x-ndjson")},
                           data={"task": "sentiment"})
    assert response.status_code == 202, response.text
    batch = client.get(f"/v1/batches/{response.json()['id']}").json()
    assert batch["total"] == 4 and batch["counts"] == {"queued": 4, "running": 0, "succeeded": 0, "failed": 0,
                                                       "cancelled": 0}


def test_one_bad_item_rejects_the_whole_batch(client, tenant, session_factory):
    items = [{"image": data_url(shape_png(i))} for i in range(3)] + [{"image": "data:image/png;base64,AAAA"}]
    response = client.post("/v1/batches", json={"task": "caption", "items": items})
    assert response.status_code == 422 and response.json()["error"]["field"] == "items[3].image"
    with session_factory() as session:
        assert session.scalar(select(func.count()).select_from(Job).where(Job.tenant_id == tenant.id)) == 0


def test_batch_item_field_errors_name_the_item(client):
    items = [{"image": data_url(shape_png(0))}, {"image": data_url(shape_png(1)), "task": "vqa"}]
    response = client.post("/v1/batches", json={"task": "caption", "items": items})
    assert response.status_code == 422 and response.json()["error"]["field"] == "items[1].question"


def test_empty_and_oversized_batches(client):
    empty = client.post("/v1/batches", json={"task": "caption", "items": []})
    assert empty.status_code == 422 and empty.json()["error"]["field"] == "items"
    too_many = client.post("/v1/batches", json={"task": "caption", "items": [{"image": "x"}] * 1001})
    assert too_many.status_code == 413 and too_many.json()["error"]["field"] == "items"
