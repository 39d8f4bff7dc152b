"""The OpenAI Files and Batch API surface through the real `openai` client, on an API whose jobs stay queued."""
from __future__ import annotations

import json
import uuid

import openai
import pytest
from sqlalchemy import select

from db.models import Job, OpenAIBatch
from image_factory import data_url, shape_png

CHAT_URL = "/v1/chat/completions"


@pytest.fixture
def client(unserved_api, tenant) -> openai.OpenAI:
    return openai.OpenAI(base_url=unserved_api.url + "/v1", api_key=tenant.token, max_retries=0, timeout=30)


def chat_line(custom_id: str, text: str | None, index: int) -> dict:
    parts = [{"type": "image_url", "image_url": {"url": data_url(shape_png(index))}}]
    parts += [{"type": "text", "text": text}] if text else []
    return {"custom_id": custom_id, "method": "POST", "url": CHAT_URL,
            "body": {"model": "lensq", "messages": [{"role": "user", "content": parts}]}}


def jsonl(lines: list) -> bytes:
    return "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines).encode()


def error_field(exc: openai.APIStatusError) -> str:
    return exc.response.json()["error"]["field"]


def test_files_round_trip(client):
    data = jsonl([chat_line("a", "what shape?", 0)])
    created = client.files.create(file=("requests.jsonl", data), purpose="batch")
    assert created.id.startswith("file-") and created.bytes == len(data) and created.purpose == "batch"
    assert created.filename == "requests.jsonl" and created.object == "file"
    assert client.files.retrieve(created.id).bytes == len(data)
    assert client.files.content(created.id).content == data
    assert created.id in [f.id for f in client.files.list(purpose="batch")]
    assert client.files.delete(created.id).deleted is True
    with pytest.raises(openai.NotFoundError) as missing:
        client.files.retrieve(created.id)
    assert error_field(missing.value) == "file_id"


def test_file_purpose_and_size_are_checked(client, unserved_api, tenant):
    with pytest.raises(openai.BadRequestError) as bad_purpose:
        client.files.create(file=("x.jsonl", b"{}\n"), purpose="assistants")
    assert error_field(bad_purpose.value) == "purpose"
    assert client.files.create(file=("train.jsonl", b"{}\n"), purpose="fine-tune").purpose == "fine-tune"
    with unserved_api.client(tenant) as http:
        empty = http.post("/v1/files", files={"file": ("e.jsonl", b"")}, data={"purpose": "batch"})
        assert empty.status_code == 400 and empty.json()["error"]["field"] == "file"
        no_file = http.post("/v1/files", data={"purpose": "batch"}, files={"other": ("x", b"1")})
        assert no_file.status_code == 400 and no_file.json()["error"]["field"] == "file"
        as_json = http.post("/v1/files", json={"purpose": "batch"})
        assert as_json.status_code == 415 and as_json.json()["error"]["field"] == "body"


def test_another_tenants_file_and_batch_are_404(client, unserved_api, make_tenant):
    created = client.files.create(file=("r.jsonl", jsonl([chat_line("a", None, 1)])), purpose="batch")
    batch = client.batches.create(input_file_id=created.id, endpoint=CHAT_URL, completion_window="24h")
    other = openai.OpenAI(base_url=unserved_api.url + "/v1", api_key=make_tenant().token, max_retries=0)
    for call in (lambda: other.files.retrieve(created.id), lambda: other.files.content(created.id),
                 lambda: other.files.delete(created.id), lambda: other.batches.retrieve(batch.id),
                 lambda: other.batches.cancel(batch.id),
                 lambda: other.batches.create(input_file_id=created.id, endpoint=CHAT_URL, completion_window="24h")):
        with pytest.raises(openai.NotFoundError):
            call()
    assert created.id not in [f.id for f in other.files.list()]
    assert batch.id not in [b.id for b in other.batches.list()]
    with pytest.raises(openai.ConflictError) as in_use:  # the input of a batch is kept
        client.files.delete(created.id)
    assert error_field(in_use.value) == "file_id"


def test_invalid_lines_go_to_the_error_file_and_cancel_finishes_the_batch(client, tenant, session_factory):
    lines = [chat_line("ok-1", "what color is it?", 2), "{not json", chat_line("ok-2", None, 3),
             {**chat_line("bad-url", None, 4), "url": "/v1/embeddings"}, chat_line("ok-1", None, 5)]
    created = client.files.create(file=("r.jsonl", jsonl(lines)), purpose="batch")
    batch = client.batches.create(input_file_id=created.id, endpoint=CHAT_URL, completion_window="24h",
                                  metadata={"run": "nightly"})
    assert batch.status == "in_progress" and batch.metadata == {"run": "nightly"}
    assert (batch.request_counts.total, batch.request_counts.completed, batch.request_counts.failed) == (5, 0, 3)
    with session_factory() as session:
        row = session.get(OpenAIBatch, uuid.UUID(hex=batch.id.removeprefix("batch_")))
        jobs = session.scalars(select(Job).where(Job.batch_id == row.batch_id).order_by(Job.batch_index)).all()
        assert [(j.ref, j.task, j.params) for j in jobs] == [("ok-1", "vqa", {"question": "what color is it?"}),
                                                            ("ok-2", "caption", {})]
    cancelled = client.batches.cancel(batch.id)
    assert cancelled.status == "cancelled" and cancelled.output_file_id is None
    errors = [json.loads(line) for line in client.files.content(cancelled.error_file_id).text.splitlines()]
    refused = {e["error"]["line"]: e for e in errors if e["response"] is None and "line" in e["error"]}
    assert sorted(refused) == [2, 4, 5]
    assert refused[4]["error"]["param"] == "url" and refused[5]["error"]["param"] == "custom_id"
    assert sorted(e["custom_id"] for e in errors if e["error"]["code"] == "batch_cancelled") == ["ok-1", "ok-2"]
    assert client.files.retrieve(cancelled.error_file_id).purpose == "batch_output"
    assert client.batches.retrieve(batch.id).status == "cancelled"


def test_a_batch_with_no_valid_line_fails_with_its_errors(client):
    created = client.files.create(file=("r.jsonl", jsonl([{"custom_id": "x", "method": "GET", "url": CHAT_URL}])),
                                  purpose="batch")
    batch = client.batches.create(input_file_id=created.id, endpoint=CHAT_URL, completion_window="24h")
    assert batch.status == "failed" and batch.errors.data[0].param == "method" and batch.errors.data[0].line == 1
    assert batch.error_file_id and batch.request_counts.failed == 1


def test_batch_create_refusals_name_the_field(client, unserved_api, tenant):
    created = client.files.create(file=("r.jsonl", jsonl([chat_line("a", None, 6)])), purpose="fine-tune")
    cases = [({"input_file_id": created.id, "endpoint": "/v1/embeddings", "completion_window": "24h"}, 400, "endpoint"),
             ({"input_file_id": created.id, "endpoint": CHAT_URL, "completion_window": "1h"}, 400, "completion_window"),
             ({"input_file_id": created.id, "endpoint": CHAT_URL}, 400, "input_file_id"),  # purpose fine-tune
             ({"input_file_id": "file-" + "0" * 32, "endpoint": CHAT_URL}, 404, "input_file_id"),
             ({"input_file_id": "nonsense", "endpoint": CHAT_URL}, 404, "input_file_id")]
    with unserved_api.client(tenant) as http:
        for body, status, field in cases:
            response = http.post("/v1/batches", json=body)
            assert (response.status_code, response.json()["error"]["field"]) == (status, field), body
        assert http.get("/v1/batches/batch_nothex").status_code == 404
