"""/v1/fine_tuning/jobs on an API whose train queue no worker serves: data checks, splits, events, cancel, the
OpenAI client, tenant isolation, and `lensq finetune` following a job's events."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections import Counter

import openai
import pytest
from sqlalchemy import func, select, update

from db.models import FineTuningEvent, FineTuningExample, FineTuningJob, utcnow
from image_factory import data_url, encode, shape_png, truncated_jpeg

N_EXAMPLES = 60


@pytest.fixture(scope="module")
def sentiment_rows() -> list[dict]:
    """A small generated sentiment set as JSONL records (images as data: URLs)."""
    from multimodal.data.sentiment import sentiment_dataset

    return [{"image": data_url(encode(example.image)), "text": example.text, "label": example.label}
            for example in sentiment_dataset(N_EXAMPLES, seed=7)]


@pytest.fixture
def http(unserved_api, tenant):
    with unserved_api.client(tenant) as client:
        yield client


def jsonl(records: list) -> bytes:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records).encode()


def upload(http, records: list, purpose: str = "fine-tune") -> str:
    response = http.post("/v1/files", data={"purpose": purpose}, files={"file": ("train.jsonl", jsonl(records))})
    assert response.status_code == 200, response.text
    return response.json()["id"]


def create(http, records: list, **fields):
    body = {"model": "lensq-tiny", "task": "sentiment", "training_file": upload(http, records), **fields}
    return http.post("/v1/fine_tuning/jobs", json=body)


def refused(response, field: str) -> str:
    assert response.status_code == 400, response.text
    assert response.json()["error"]["field"] == field, response.text
    return response.json()["error"]["message"]


def row_id(public: str) -> uuid.UUID:
    return uuid.UUID(hex=public.split("-", 1)[1])


def test_create_checks_carves_and_stores_the_data(http, sentiment_rows, session_factory):
    records = sentiment_rows + [sentiment_rows[0], sentiment_rows[1]]  # two repeats: a warning, kept together
    response = create(http, records, suffix="posts", hyperparameters={"max_steps": 40, "learning_rate": 0.002},
                      metadata={"team": "social"})
    assert response.status_code == 200, response.text
    job = response.json()
    assert job["id"].startswith("ftjob-") and job["object"] == "fine_tuning.job" and job["status"] == "queued"
    assert job["model"] == "lensq-tiny" and job["task"] == "sentiment" and job["fine_tuned_model"] is None
    assert job["hyperparameters"]["max_steps"] == 40 and job["hyperparameters"]["learning_rate"] == 0.002
    assert job["hyperparameters"]["learning_rate_multiplier"] == 2.0 and job["metadata"] == {"team": "social"}
    report = job["data_report"]
    assert sum(report["splits"].values()) == N_EXAMPLES + 2
    assert 0.15 <= report["splits"]["test"] / (N_EXAMPLES + 2) <= 0.25
    assert 0.10 <= report["splits"]["validation"] / (N_EXAMPLES + 2) <= 0.20
    assert [w["code"] for w in report["warnings"]] == ["duplicates"]
    assert report["warnings"][0]["lines"] == [N_EXAMPLES + 1, N_EXAMPLES + 2]

    with session_factory() as session:
        row = session.get(FineTuningJob, row_id(job["id"]))
        assert row.queue == "unserved.train" and row.hyperparameters["seed"] == 0
        examples = session.scalars(select(FineTuningExample).where(FineTuningExample.job_id == row.id)).all()
        events = session.scalars(select(FineTuningEvent).where(FineTuningEvent.job_id == row.id)
                                 .order_by(FineTuningEvent.id)).all()
    assert dict(Counter(e.split for e in examples)) == {k: v for k, v in report["splits"].items() if v}
    by_line = {e.line: e for e in examples}
    assert by_line[1].split == by_line[N_EXAMPLES + 1].split and by_line[2].split == by_line[N_EXAMPLES + 2].split
    assert by_line[3].target == sentiment_rows[2]["label"] and by_line[3].text == sentiment_rows[2]["text"]
    assert {e.split for e in examples if e.target == "negative"} == {"train", "validation", "test"}  # stratified
    assert [(e.level, e.message.split(":")[0]) for e in events][:2] == [("info", "Created fine-tuning job"),
                                                                      ("info", "Validated files")]
    assert events[1].data["splits"] == report["splits"] and events[2].level == "warn"

    again = create(http, records).json()  # the same data carves the same way
    with session_factory() as session:
        splits = dict(session.execute(select(FineTuningExample.line, FineTuningExample.split)
                                      .where(FineTuningExample.job_id == row_id(again["id"]))).all())
    assert splits == {line: e.split for line, e in by_line.items()}


def test_a_validation_file_is_used_whole_and_leakage_refused(http, sentiment_rows):
    train, validation = sentiment_rows[:45], sentiment_rows[45:]
    job = create(http, train, validation_file=upload(http, validation)).json()
    assert job["data_report"]["splits"]["validation"] == len(validation)
    assert job["validation_file"].startswith("file-")
    leaky = create(http, train, validation_file=upload(http, validation + [train[4], train[9]]))
    message = refused(leaky, "validation_file")
    assert "2 example(s)" in message and "training_file line 5" in message and "training_file line 10" in message


@pytest.mark.parametrize("bad_line, field_word", [
    ({"image": data_url(truncated_jpeg(), "image/jpeg"), "text": "hi", "label": "positive"}, "(image)"),
    ({"image": "data:image/png;base64,!!!", "text": "hi", "label": "positive"}, "(image)"),
    ({"image": data_url(shape_png(1)), "text": "hi", "label": "happy"}, "unknown label 'happy'"),
    ({"image": data_url(shape_png(1)), "text": "hi"}, "(label): label is required"),
    ({"image": data_url(shape_png(1)), "text": "hi", "label": "positive", "caption": "x"}, "unknown field 'caption'"),
    ({"text": "hi", "label": "positive"}, "(image)"),
    ({"image_sha256": "0" * 64, "text": "hi", "label": "positive"}, "no image with this sha256"),
    ("{not json", "(json)"),
])
def test_a_bad_line_is_refused_naming_the_file_and_line(http, sentiment_rows, bad_line, field_word):
    records = sentiment_rows[:30] + [bad_line] + sentiment_rows[30:]
    message = refused(create(http, records), "training_file")
    assert "1 line(s) failed" in message and "line 31 " in message and field_word in message, message
    assert http.get("/v1/fine_tuning/jobs").json()["data"] == []


def test_many_bad_lines_are_counted_and_the_first_few_named(http, sentiment_rows):
    records = [{**row, "label": "great"} for row in sentiment_rows[:12]] + sentiment_rows[12:]
    message = refused(create(http, records), "training_file")
    assert message.startswith("12 line(s) failed the checks (first 5 shown)") and "line 5 " in message
    assert "line 6 " not in message


def test_too_few_examples_and_imbalance(http, sentiment_rows):
    assert "at least 20" in refused(create(http, sentiment_rows[:12]), "training_file")
    positives = [r for r in sentiment_rows if r["label"] == "positive"]
    others = [r for r in sentiment_rows if r["label"] != "positive"][:4]
    job = create(http, positives + others).json()
    codes = {w["code"]: w for w in job["data_report"]["warnings"]}
    assert "imbalance" in codes and codes["imbalance"]["label_counts"]["positive"] == len(positives)
    events = http.get(f"/v1/fine_tuning/jobs/{job['id']}/events", params={"limit": 50}).json()["data"]
    assert any(e["level"] == "warn" and "imbalanced" in e["message"] for e in events)


def test_an_uploaded_image_is_named_by_sha256(http, make_tenant, unserved_api, sentiment_rows):
    sha = http.post("/v1/jobs", json={"task": "caption", "image": data_url(shape_png(77))}).json()["image_sha256"]
    records = sentiment_rows[:40] + [{"image_sha256": sha, "text": "a plain day", "label": "neutral"}]
    assert create(http, records).status_code == 200
    with unserved_api.client(make_tenant()) as other:  # another tenant's image is unknown to this one
        assert "no image with this sha256" in refused(create(other, records), "training_file")


@pytest.mark.parametrize("fields, field", [
    ({"hyperparameters": {"epochs": 3}}, "hyperparameters.epochs"),
    ({"hyperparameters": {"n_epochs": 2, "max_steps": 10}}, "hyperparameters.n_epochs"),
    ({"hyperparameters": {"max_steps": 0}}, "hyperparameters.max_steps"),
    ({"hyperparameters": {"method": "lora"}}, "hyperparameters.method"),
    ({"hyperparameters": {"learning_rate": "fast"}}, "hyperparameters.learning_rate"),
    ({"model": "gpt-4o"}, "model"), ({"task": "translate"}, "task"), ({"suffix": "a:b"}, "suffix"),
    ({"labels": ["a", "b"]}, "labels"), ({"task": "classify"}, "labels"), ({"seed": -1}, "seed"),
    ({"integrations": []}, "integrations"), ({"metadata": {"k": 1}}, "metadata"),
])
def test_bad_fields_are_refused_by_name(http, sentiment_rows, fields, field):
    refused(create(http, sentiment_rows[:25], **fields), field)


def test_openai_hyperparameters_map_onto_the_library(http, sentiment_rows):
    job = create(http, sentiment_rows, hyperparameters={"n_epochs": 2, "batch_size": 8,
                                                        "learning_rate_multiplier": 0.5}).json()
    train = job["data_report"]["splits"]["train"]
    assert job["hyperparameters"]["max_steps"] == -(-2 * train // 8)
    assert job["hyperparameters"]["learning_rate"] == pytest.approx(5e-4)
    assert job["hyperparameters"]["n_epochs"] == pytest.approx(2, abs=0.2)
    auto = create(http, sentiment_rows, hyperparameters={"n_epochs": "auto", "batch_size": "auto"}).json()
    assert auto["hyperparameters"]["max_steps"] == 200 and auto["hyperparameters"]["batch_size"] == 16


def test_files_of_another_tenant_or_purpose(http, unserved_api, make_tenant, sentiment_rows):
    theirs = make_tenant()
    with unserved_api.client(theirs) as other:
        their_file = upload(other, sentiment_rows)
    body = {"model": "lensq-tiny", "task": "sentiment"}
    missing = http.post("/v1/fine_tuning/jobs", json={**body, "training_file": their_file})
    assert missing.status_code == 404 and missing.json()["error"]["field"] == "training_file"
    batch_file = upload(http, sentiment_rows, purpose="batch")
    refused(http.post("/v1/fine_tuning/jobs", json={**body, "training_file": batch_file}), "training_file")


def test_the_openai_client_creates_reads_lists_cancels(unserved_api, tenant, sentiment_rows):
    client = openai.OpenAI(base_url=unserved_api.url + "/v1", api_key=tenant.token, max_retries=0, timeout=60)
    training = client.files.create(file=("train.jsonl", jsonl(sentiment_rows)), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(model="lensq-tiny", training_file=training.id, suffix="oa", seed=3,
                                         hyperparameters={"n_epochs": 1}, extra_body={"task": "sentiment"})
    assert job.status == "queued" and job.seed == 3 and job.training_file == training.id
    assert client.fine_tuning.jobs.retrieve(job.id).id == job.id
    second = client.fine_tuning.jobs.create(model="lensq-tiny", training_file=training.id,
                                            extra_body={"task": "sentiment"})
    page = client.fine_tuning.jobs.list(limit=1)
    assert [j.id for j in page.data] == [second.id] and page.has_more
    assert [j.id for j in client.fine_tuning.jobs.list()] == [second.id, job.id]  # the cursor pages through
    events = client.fine_tuning.jobs.list_events(job.id)
    assert [e.message.split(":")[0] for e in events.data] == ["Validated files", "Created fine-tuning job"]
    assert events.data[0].object == "fine_tuning.job.event" and events.data[0].type == "message"
    cancelled = client.fine_tuning.jobs.cancel(job.id)
    assert cancelled.status == "cancelled" and cancelled.finished_at is not None
    with pytest.raises(openai.ConflictError):
        client.fine_tuning.jobs.cancel(job.id)
    with pytest.raises(openai.NotFoundError):
        client.fine_tuning.jobs.retrieve("ftjob-" + uuid.uuid4().hex)


def test_cancel_of_a_running_job_is_a_request_to_its_worker(http, sentiment_rows, session_factory):
    job = create(http, sentiment_rows).json()
    with session_factory.begin() as session:  # as a worker's claim leaves it
        session.execute(update(FineTuningJob).where(FineTuningJob.id == row_id(job["id"])).values(status="running"))
    answer = http.post(f"/v1/fine_tuning/jobs/{job['id']}/cancel")
    assert answer.status_code == 200 and answer.json()["status"] == "running"
    with session_factory() as session:
        assert session.get(FineTuningJob, row_id(job["id"])).cancel_requested_at is not None
    events = http.get(f"/v1/fine_tuning/jobs/{job['id']}/events").json()["data"]
    assert events[0]["message"].startswith("Cancellation requested")


def test_another_tenant_sees_nothing(http, unserved_api, make_tenant, sentiment_rows):
    job = create(http, sentiment_rows).json()
    with unserved_api.client(make_tenant()) as other:
        for method, path in (("GET", ""), ("POST", "/cancel"), ("GET", "/events")):
            response = other.request(method, f"/v1/fine_tuning/jobs/{job['id']}{path}")
            assert response.status_code == 404 and response.json()["error"]["field"] == "fine_tuning_job_id"
        assert other.get("/v1/fine_tuning/jobs").json()["data"] == []
    assert http.get(f"/v1/fine_tuning/jobs/{job['id']}").json()["status"] == "queued"


def finish_with_progress(session_factory, public_id: str, status: str, model: str | None = None) -> None:
    """What a worker writes while training and at its end: progress events, then the final status."""
    job_id = row_id(public_id)
    with session_factory.begin() as session:
        for step in (10, 20, 30, 40):
            session.add(FineTuningEvent(job_id=job_id, message=f"Step {step}/40", created_at=utcnow(),
                                        data={"step": step, "max_steps": 40, "loss": 1.0 / step,
                                              "validation_metric": step / 50}))
        final = {"status": status, "finished_at": utcnow(), "trained_steps": 40, "fine_tuned_model": model}
        if status == "failed":
            final["error"] = {"code": "training", "message": "loss diverged", "param": None}
        session.execute(update(FineTuningJob).where(FineTuningJob.id == job_id).values(**final))
        session.add(FineTuningEvent(job_id=job_id, message=f"Fine-tuning job {status}", created_at=utcnow()))


def test_events_stream_until_the_job_is_final(http, sentiment_rows, session_factory):
    job = create(http, sentiment_rows, hyperparameters={"max_steps": 40}).json()
    finish_with_progress(session_factory, job["id"], "succeeded", "ft:lensq-tiny:t:custom:12345678")
    with http.stream("GET", f"/v1/fine_tuning/jobs/{job['id']}/events", params={"stream": "true"}) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        body = response.read().decode()
    data = [json.loads(line[len("data: "):]) for line in body.splitlines() if line.startswith("data: ")]
    assert [d.get("data", {}) and d["data"].get("step") for d in data[:-1] if d.get("type") == "metrics"] == [
        10, 20, 30, 40]
    assert data[-1] == {"id": job["id"]} and "event: done" in body
    ids = [int(d["id"].removeprefix("ftevent-")) for d in data[:-1]]
    assert ids == sorted(ids)
    resumed = http.get(f"/v1/fine_tuning/jobs/{job['id']}/events",
                       params={"stream": "true", "after": data[-4]["id"]}).text  # the last two again
    assert resumed.count("event: fine_tuning.job.event") == 2


def run_cli(unserved_api, tenant, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "LENSQ_API_URL": unserved_api.url, "LENSQ_API_KEY": tenant.token}
    return subprocess.run([sys.executable, "-m", "services.cli", "finetune", *args], env=env, capture_output=True,
                          text=True, timeout=120)


def test_cli_creates_a_job_and_follows_one_to_its_end(unserved_api, tenant, http, tmp_path, session_factory,
                                                      sentiment_rows):
    data = tmp_path / "posts.jsonl"
    data.write_bytes(jsonl(sentiment_rows))
    created = run_cli(unserved_api, tenant, str(data), "--task", "sentiment", "--suffix", "cli", "--hp",
                      "max_steps=40", "--hp", "learning_rate=0.002", "--no-wait")
    assert created.returncode == 0, created.stderr
    job = json.loads(created.stdout)
    assert job["status"] == "queued" and job["hyperparameters"]["max_steps"] == 40
    assert job["user_provided_suffix"] == "cli"

    finish_with_progress(session_factory, job["id"], "succeeded", "ft:lensq-tiny:t:cli:12345678")
    followed = run_cli(unserved_api, tenant, "--job", job["id"])
    assert followed.returncode == 0, followed.stderr
    assert followed.stdout.strip() == "ft:lensq-tiny:t:cli:12345678"
    assert "40/40" in followed.stderr and "Validated files" in followed.stderr

    failed = create(http, sentiment_rows).json()
    finish_with_progress(session_factory, failed["id"], "failed")
    result = run_cli(unserved_api, tenant, "--job", failed["id"])
    assert result.returncode == 1 and "loss diverged" in result.stderr and result.stdout == ""


def test_cli_refuses_bad_arguments_and_bad_data(unserved_api, tenant, tmp_path, sentiment_rows):
    assert run_cli(unserved_api, tenant).returncode == 2  # neither a file nor --job
    data = tmp_path / "bad.jsonl"
    data.write_bytes(jsonl(sentiment_rows[:30] + [{**sentiment_rows[0], "label": "joy"}]))
    bad_hp = run_cli(unserved_api, tenant, str(data), "--task", "sentiment", "--hp", "max_steps")
    assert bad_hp.returncode == 2 and "key=value" in bad_hp.stderr
    bad_data = run_cli(unserved_api, tenant, str(data), "--task", "sentiment")
    assert bad_data.returncode == 2 and "training_file" in bad_data.stderr and "line 31" in bad_data.stderr


def test_the_live_stream_delivers_events_written_while_it_is_open(http, sentiment_rows, session_factory):
    job = create(http, sentiment_rows).json()
    seen: list[str] = []
    with http.stream("GET", f"/v1/fine_tuning/jobs/{job['id']}/events", params={"stream": "true"}) as response:
        for line in response.iter_lines():
            if not line.startswith("data: "):
                continue
            seen.append(json.loads(line[len("data: "):]).get("message", "done"))
            if len(seen) == 2:  # the job's first two events are out: the rest is written while the stream waits
                finish_with_progress(session_factory, job["id"], "cancelled")
    assert seen[0].startswith("Created") and seen[1].startswith("Validated")
    assert seen[2:] == ["Step 10/40", "Step 20/40", "Step 30/40", "Step 40/40", "Fine-tuning job cancelled", "done"]


@pytest.mark.parametrize("task, line, extra", [
    ("caption", lambda i: {"image": data_url(shape_png(i)), "caption": f"shape number {i}"}, {}),
    ("vqa", lambda i: {"image": data_url(shape_png(i)), "text": "what shape is it?", "answer": f"shape {i % 3}"}, {}),
    ("classify", lambda i: {"image": data_url(shape_png(i)), "label": ("cat", "dog")[i % 2]},
     {"labels": ["cat", "dog"]}),
])
def test_every_task_takes_its_own_lines(http, session_factory, task, line, extra):
    records = [line(i) for i in range(30)]
    job = create(http, records, task=task, **extra)
    assert job.status_code == 200, job.text
    with session_factory() as session:
        row = session.get(FineTuningJob, row_id(job.json()["id"]))
        targets = set(session.scalars(select(FineTuningExample.target).where(FineTuningExample.job_id == row.id)))
    assert targets == {line(i)[{"caption": "caption", "vqa": "answer", "classify": "label"}[task]] for i in range(30)}
    assert row.hyperparameters.get("labels") == extra.get("labels")
    if task == "vqa":  # its question is required
        no_question = {"image": data_url(shape_png(99)), "answer": "circle"}
        message = refused(create(http, records + [no_question], task=task), "training_file")
        assert "line 31 (text): text (the question) is required" in message


def test_a_tenant_may_have_only_so_many_active_fine_tunes(start_api, tenant, sentiment_rows, session_factory):
    capped = start_api("fine-tune-cap-api", LENSQ_QUEUE_PREFIX="unserved", LENSQ_FINE_TUNE_MAX_ACTIVE_PER_TENANT="2")
    with capped.client(tenant) as http:
        first, second = (create(http, sentiment_rows).json() for _ in range(2))
        with session_factory.begin() as session:  # one of them training, as a worker's claim leaves it
            session.execute(update(FineTuningJob).where(FineTuningJob.id == row_id(second["id"]))
                            .values(status="running"))
        third = create(http, sentiment_rows)
        assert third.status_code == 429 and third.headers["Retry-After"], third.text
        assert third.json()["error"]["field"] == "fine_tuning_jobs" and "2" in third.json()["error"]["message"]
        assert http.post(f"/v1/fine_tuning/jobs/{first['id']}/cancel").json()["status"] == "cancelled"
        assert create(http, sentiment_rows).status_code in (200, 201)  # a final job no longer counts
    with session_factory() as session:
        count = session.scalar(select(func.count()).select_from(FineTuningJob)
                               .where(FineTuningJob.tenant_id == tenant.id))
    assert count == 3  # the refused request stored nothing
