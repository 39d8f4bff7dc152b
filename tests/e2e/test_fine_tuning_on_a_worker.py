"""Fine-tuning on real training workers: a tenant's version beats the base, a killed worker's job resumes, a cancel."""
from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import select
from worker_processes import WorkerPool

from db.models import FineTuningEvent, FineTuningJob, ModelVersion
from image_factory import data_url, encode
from polling import wait_for_final, wait_until

FINAL = ("succeeded", "failed", "cancelled")


@pytest.fixture(scope="module")
def training_pool(service_env, tmp_path_factory) -> Iterator[WorkerPool]:
    """Workers started for the train queue only (`lensq worker --queues lensq.train`), seeing cancels quickly."""
    from workers.config import WorkerSettings, train_queue

    env = {**service_env, "LENSQ_FINE_TUNE_POLL_SECONDS": "0.5", "LENSQ_FINE_TUNE_PROGRESS_SECONDS": "0.5"}
    queue = train_queue(WorkerSettings(queue_prefix=env.get("LENSQ_QUEUE_PREFIX", "lensq")))
    pool = WorkerPool(env=env, log_dir=tmp_path_factory.mktemp("training-workers"), name_prefix="t", queues=[queue])
    pool.start(2)  # both at once: they load the model side by side, and the kill test needs a survivor
    yield pool
    pool.stop_all()


def sentiment_lines(count: int, seed: int) -> list[dict]:
    """Generated sentiment examples labelled by a rule the base model was not trained on: this tenant's posts are
    ironic, so a post's sentiment counts as its opposite (multimodal.data.tenant_sentiment). The base model answers
    the standard rule, so it scores low on this tenant's data; only a fine-tune can learn the rule."""
    from multimodal.data.tenant_sentiment import tenant_sentiment_dataset

    return [{"image": encode(e.image), "text": e.text, "label": e.label}
            for e in tenant_sentiment_dataset(count, seed=seed, rule="ironic")]


def events_of(session_factory, job_id: uuid.UUID) -> list[FineTuningEvent]:
    with session_factory() as session:
        stmt = select(FineTuningEvent).where(FineTuningEvent.job_id == job_id).order_by(FineTuningEvent.id)
        return list(session.scalars(stmt))


def job_row(session_factory, job_id: uuid.UUID) -> FineTuningJob:
    with session_factory() as session:
        return session.get(FineTuningJob, job_id)


def wait_for_status(session_factory, job_id: uuid.UUID, statuses, timeout: float) -> FineTuningJob:
    return wait_until(lambda: (row := job_row(session_factory, job_id)).status in statuses and row,
                      timeout=timeout, what=f"fine-tuning job {job_id} to be {'/'.join(statuses)}")


def describe(session_factory, job_id: uuid.UUID, pool: WorkerPool) -> str:
    """The job's events and the workers' logs' tail, for a failure message."""
    lines = [f"{e.level} {e.message} {e.data}" for e in events_of(session_factory, job_id)]
    return "\n".join(lines) + "\n--- workers ---\n" + pool.logs()[-4000:]


def start_fine_tune(api, tenant, lines: list[dict], hyperparameters: dict, suffix: str) -> uuid.UUID:
    """Uploads the lines as a fine-tune JSONL through /v1/files and starts a sentiment fine-tune on lensq-tiny."""
    body = "\n".join(json.dumps({**line, "image": data_url(line["image"])}) for line in lines).encode()
    with api.client(tenant) as http:
        upload = http.post("/v1/files", data={"purpose": "fine-tune"}, files={"file": ("posts.jsonl", body)})
        assert upload.status_code == 200, upload.text
        response = http.post("/v1/fine_tuning/jobs", json={
            "training_file": upload.json()["id"], "model": "lensq-tiny", "task": "sentiment",
            "hyperparameters": hyperparameters, "suffix": suffix})
        assert response.status_code in (200, 201), response.text
        return uuid.UUID(response.json()["id"].removeprefix("ftjob-"))


@pytest.mark.timeout(300)
def test_a_tenants_fine_tune_beats_the_base_model_on_its_test_split(api, tenant, training_pool, session_factory,
                                                                    worker_pool, reference_pipeline, make_tenant):
    training_pool.ensure(1)
    hyperparameters = {"max_steps": 60, "batch_size": 16, "learning_rate": 3e-3, "eval_every": 10,
                       "checkpoint_every": 20, "patience": 3}
    job_id = start_fine_tune(api, tenant, sentiment_lines(200, seed=1), hyperparameters, suffix="posts")

    job = wait_for_status(session_factory, job_id, FINAL, timeout=240)
    assert job.status == "succeeded", describe(session_factory, job_id, training_pool)
    assert job.fine_tuned_model == f"ft:lensq-tiny:{tenant.name}:posts:{job_id.hex[:8]}"
    with session_factory() as session:
        version = session.scalar(select(ModelVersion).where(ModelVersion.tenant_id == tenant.id,
                                                            ModelVersion.name == job.fine_tuned_model))
        weights = version.weights
    assert version.fine_tuning_job_id == job_id and version.task == "sentiment"
    assert 0 < len(weights) < 5_000_000, "the version holds the trained parts only, never a copy of the base model"
    report = version.eval
    assert report["baseline"]["model"] == "lensq-tiny"
    assert report["test"]["n"] == report["baseline"]["test"]["n"] == report["splits"]["test"] > 0
    assert report["test"]["metric"] == report["test"]["macro_f1"]
    assert report["test"]["metric"] > report["baseline"]["test"]["metric"], report
    assert report["validation_curve"] and report["steps"] >= report["best_step"] > 0
    with api.client(tenant) as http:  # what the tenant reads: the job, and the worker's events in order
        public = http.get(f"/v1/fine_tuning/jobs/ftjob-{job_id.hex}").json()
        events = http.get(f"/v1/fine_tuning/jobs/ftjob-{job_id.hex}/events",
                          params={"order": "asc", "limit": 100}).json()["data"]
    assert public["status"] == "succeeded" and public["fine_tuned_model"] == job.fine_tuned_model
    assert public["trained_steps"] == report["steps"]
    metrics = [e["data"] for e in events if e["type"] == "metrics"]
    assert metrics and all(m["step"] > 0 and m["loss"] >= 0 for m in metrics)
    assert any(m["validation_metric"] is not None for m in metrics)
    assert any(e["message"].startswith("Training started") for e in events)
    assert any(e["message"].startswith("Checkpoint saved") for e in events)
    assert events[-1]["message"] == f"Fine-tuning job succeeded: {job.fine_tuned_model}"
    check_jobs_naming_the_version_use_it(api, tenant, worker_pool, session_factory, reference_pipeline,
                                         version, weights)
    check_another_tenant_can_neither_see_nor_use_it(api, make_tenant(), job_id, job.fine_tuned_model)


def check_jobs_naming_the_version_use_it(api, tenant, worker_pool, session_factory, reference_pipeline, version,
                                         weights) -> None:
    """Inference jobs naming the version, run by an inference worker, answer what the version alone answers."""
    from multimodal.finetune import TunedParts, apply_tuned
    from workers.model import decode_image_bytes

    worker_pool.ensure(1)
    probes = sentiment_lines(6, seed=9)
    with api.client(tenant) as http:
        responses = [http.post("/v1/jobs", json={"task": "sentiment", "image": data_url(p["image"]), "text": p["text"],
                                                 "model": version.name}) for p in probes]
    assert all(r.status_code == 202 for r in responses), [r.text for r in responses]
    assert all(r.json()["model"] == version.name for r in responses)
    jobs = wait_for_final(session_factory, [uuid.UUID(r.json()["id"]) for r in responses], timeout=180)
    tuned = apply_tuned(reference_pipeline, TunedParts.from_stored("sentiment", weights, version.config))
    expected = tuned.sentiment([decode_image_bytes(p["image"]) for p in probes], [p["text"] for p in probes])
    for response, want in zip(responses, expected):
        job = jobs[uuid.UUID(response.json()["id"])]
        assert job.status == "succeeded", job.error
        assert job.model_version == tuned.model_version != reference_pipeline.model_version
        assert job.result["label"] == want["label"]
        for label, probability in want["probabilities"].items():
            assert abs(job.result["probabilities"][label] - probability) < 1e-3


def check_another_tenant_can_neither_see_nor_use_it(api, stranger, job_id: uuid.UUID, name: str) -> None:
    with api.client(stranger) as http:
        job = http.get(f"/v1/fine_tuning/jobs/ftjob-{job_id.hex}")
        model = http.get(f"/v1/models/{name}")
        use = http.post("/v1/jobs", json={"task": "sentiment", "image": data_url(sentiment_lines(1, seed=5)[0]["image"]),
                                          "text": "hello", "model": name})
    assert job.status_code == model.status_code == use.status_code == 404, (job.text, model.text, use.text)
    assert use.json()["error"]["field"] == "model" and name not in use.text


def _holder(session_factory, job_id: uuid.UUID, pool: WorkerPool):
    """The worker holding the job's lease once it has stored a checkpoint, else None."""
    job = job_row(session_factory, job_id)
    if job.status != "running" or not job.checkpoint_step:
        return None
    return next((w for w in pool.alive() if job.lease_owner.endswith(f"/{w.pid}")), None)


@pytest.mark.timeout(300)
def test_a_killed_training_worker_s_job_resumes_from_its_checkpoint_elsewhere(api, tenant, training_pool,
                                                                               session_factory):
    training_pool.ensure(2)
    hyperparameters = {"max_steps": 80, "batch_size": 8, "eval_every": 40, "checkpoint_every": 10, "patience": 5}
    job_id = start_fine_tune(api, tenant, sentiment_lines(60, seed=2), hyperparameters, suffix="resume")

    victim = wait_until(lambda: _holder(session_factory, job_id, training_pool), timeout=180, interval=0.05,
                        what="a worker to store the job's first checkpoint")
    training_pool.kill_hard(victim)

    job = wait_for_status(session_factory, job_id, FINAL, timeout=180)
    assert job.status == "succeeded", describe(session_factory, job_id, training_pool)
    assert job.attempts == 2 and not job.lease_owner.endswith(f"/{victim.pid}")
    resumed = [e.data["resumed_from_step"] for e in events_of(session_factory, job_id)
               if e.data and "resumed_from_step" in e.data]
    assert resumed and resumed[0] > 0, describe(session_factory, job_id, training_pool)


@pytest.mark.timeout(300)
def test_cancelling_a_running_fine_tune_ends_it_cancelled(api, tenant, training_pool, session_factory):
    training_pool.ensure(1)
    hyperparameters = {"max_steps": 5000, "batch_size": 8, "eval_every": 1000, "checkpoint_every": 1000,
                       "patience": 5}
    job_id = start_fine_tune(api, tenant, sentiment_lines(30, seed=3), hyperparameters, suffix="cancel")
    wait_until(lambda: any(e.data and "loss" in e.data for e in events_of(session_factory, job_id)),
               timeout=180, what="the first metrics event")

    with api.client(tenant) as http:
        response = http.post(f"/v1/fine_tuning/jobs/ftjob-{job_id.hex}/cancel")
        assert response.status_code == 200, response.text

    job = wait_for_status(session_factory, job_id, FINAL, timeout=60)
    assert job.status == "cancelled", describe(session_factory, job_id, training_pool)
    assert job.fine_tuned_model is None and job.finished_at is not None
    assert events_of(session_factory, job_id)[-1].message == "Fine-tuning job cancelled"
    with session_factory() as session:
        assert session.scalar(select(ModelVersion.id).where(ModelVersion.fine_tuning_job_id == job_id)) is None
