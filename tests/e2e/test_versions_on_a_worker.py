"""Two tenants' fine-tuned versions and base jobs served by one worker in one run, each as its version alone gives."""
from __future__ import annotations

import dataclasses
import hashlib
import uuid
from collections.abc import Iterator

import httpx
import pytest

from db.models import Job, ModelVersion
from image_factory import data_url, shape_image, shape_png
from polling import wait_for_final
from worker_processes import WorkerPool

TEXTS = ("what a day", "look at this", "so it goes", "again", "")
# Each tenant teaches the sentiment head its own rule, so the two versions and the base answer differently.
RULES = {"a": ("positive", "negative", "neutral"), "b": ("negative", "neutral", "positive")}  # by shape: circle, ...
CAPTIONS = ("b says a round thing", "b says a box", "b says a pointy thing")  # tenant b's own captions, by shape
QUEUE_PREFIX = "versions"  # this test's own queues: its jobs wait for the one worker it starts


def tune_examples(rule: tuple[str, ...], indices: range) -> list:
    from multimodal.finetune import TuneExample

    return [TuneExample(image=shape_image(i), text=TEXTS[i % len(TEXTS)], target=rule[i % 3]) for i in indices]


@pytest.fixture(scope="module")
def tuned_parts(reference_pipeline) -> dict:
    """Each tenant's version, trained here with the real library on small generated data and few steps."""
    from multimodal.finetune import TuneSettings, fine_tune

    settings = TuneSettings(task="sentiment", max_steps=12, batch_size=8, eval_every=6, checkpoint_every=6,
                            warmup_steps=2, learning_rate=5e-3)
    parts = {}
    for tenant, rule in RULES.items():
        parts[tenant] = fine_tune(reference_pipeline, settings, tune_examples(rule, range(0, 48)),
                                  tune_examples(rule, range(48, 60)))
    # tenant b also has a caption version: a LoRA overlay and projector, served beside the sentiment heads
    captions = [dataclasses.replace(example, text="") for example in tune_examples(CAPTIONS, range(0, 24))]
    lora = TuneSettings(task="caption", max_steps=6, batch_size=4, eval_every=6, checkpoint_every=6, warmup_steps=1,
                        learning_rate=1e-2)
    parts["b-caption"] = fine_tune(reference_pipeline, lora, captions[:18], captions[18:])
    assert all(part is not None for part in parts.values())
    return parts


def insert_version(session_factory, tenant_id: uuid.UUID, name: str, parts, base_model: str = "lensq-tiny") -> None:
    """The row a finished fine-tune writes: only the trained parts' weights, their hash and config."""
    with session_factory.begin() as session:
        session.add(ModelVersion(tenant_id=tenant_id, name=name, base_model=base_model, task=parts.task,
                                 weights=parts.weights, weights_sha256=hashlib.sha256(parts.weights).hexdigest(),
                                 config=parts.config, eval={}))


@pytest.fixture(scope="module")
def versions_stack(service_env, tmp_path_factory) -> Iterator[tuple[str, WorkerPool]]:
    """An API ringing this test's own queues, and a pool whose one worker the test starts once the jobs wait."""
    from services.processes import api_command, free_port, start_process, stop_process, wait_until_ready

    env = {**service_env, "LENSQ_QUEUE_PREFIX": QUEUE_PREFIX, "LENSQ_BATCH_SIZE": "32"}
    log_dir = tmp_path_factory.mktemp("versions")
    port = free_port()
    api = start_process(api_command(port=port), env=env, log_path=log_dir / "api.log")
    pool = WorkerPool(env=env, log_dir=log_dir, name_prefix="versions")
    try:
        wait_until_ready(f"http://127.0.0.1:{port}/healthz", process=api, timeout=60, log_path=log_dir / "api.log")
        yield f"http://127.0.0.1:{port}", pool
    finally:
        pool.stop_all()
        stop_process(api)


def submit(http: httpx.Client, index: int, model: str | None, task: str = "sentiment") -> dict:
    body = {"task": task, "image": data_url(shape_png(index))}
    body |= {"text": TEXTS[index % len(TEXTS)]} if task == "sentiment" else {}
    response = http.post("/v1/jobs", json=body | ({"model": model} if model else {}))
    assert response.status_code == 202, response.text
    return {"id": response.json()["id"], "index": index, "model": model, "task": task}


def expected(pipeline, base, index: int, task: str = "sentiment") -> dict:
    """What `pipeline` alone answers for job `index`'s image (read as the worker reads it) and text."""
    image = base.prepare(shape_png(index))
    if task == "caption":
        return {"caption": pipeline.caption([image])[0]}
    return pipeline.sentiment([image], [TEXTS[index % len(TEXTS)]])[0]


def assert_same(actual: dict, wanted: dict, where: str) -> None:
    """Captions exactly equal; a sentiment's label equal and its probabilities within 1e-3 (batched vs alone)."""
    if "caption" in wanted:
        assert actual == wanted, where
        return
    assert actual["label"] == wanted["label"], where
    for label, probability in wanted["probabilities"].items():
        assert actual["probabilities"][label] == pytest.approx(probability, abs=1e-3), where


@pytest.mark.timeout(300)
def test_two_tenants_versions_and_base_jobs_on_one_worker(versions_stack, make_tenant, session_factory,
                                                          reference_pipeline, tuned_parts):
    from multimodal.finetune import apply_tuned

    url, pool = versions_stack
    tenants = {"a": make_tenant(), "b": make_tenant()}
    names = {key: f"ft:lensq-tiny:{tenants[key].name}:rule:{uuid.uuid4().hex[:8]}" for key in tenants}
    for key, tenant in tenants.items():
        insert_version(session_factory, tenant.id, names[key], tuned_parts[key])
    caption_name = f"ft:lensq-tiny:{tenants['b'].name}:captions:{uuid.uuid4().hex[:8]}"
    insert_version(session_factory, tenants["b"].id, caption_name, tuned_parts["b-caption"])
    other_base = f"ft:lensq-smol:{tenants['a'].name}:elsewhere:{uuid.uuid4().hex[:8]}"
    insert_version(session_factory, tenants["a"].id, other_base, tuned_parts["a"], base_model="lensq-smol")

    jobs = []  # every job waits before the worker starts: one claim takes them all, one run serves them
    for key, tenant in tenants.items():
        with httpx.Client(base_url=url, headers=tenant.headers, timeout=60) as http:
            offset = 100 if key == "a" else 200
            mine = [submit(http, offset + i, names[key]) | {"tenant": key} for i in range(5)]
            mine += [submit(http, offset + 10 + i, None) | {"tenant": key} for i in range(2)]
            if key == "a":
                mine.append(submit(http, offset + 20, other_base) | {"tenant": key})
            else:
                mine += [submit(http, offset + 30 + i, caption_name, "caption") | {"tenant": "b-caption"}
                         for i in range(3)]
                mine += [submit(http, offset + 40 + i, None, "caption") | {"tenant": key} for i in range(2)]
            # each job shows the model it asked for: its version's name, or the base model
            shown = {job["id"]: job["model"] for job in http.get("/v1/jobs").json()["data"]}
            assert shown == {job["id"]: job["model"] or "lensq-tiny" for job in mine}
            jobs += mine
    [worker] = pool.start(1)
    done = wait_for_final(session_factory, [uuid.UUID(job["id"]) for job in jobs], timeout=240)

    rows = {str(job_id): row for job_id, row in done.items()}
    # one claim per queue (sentiment, caption), each run as one batch, all by the one worker
    assert len({(row.queue, row.lease_token) for row in rows.values()}) == 2, "expected one claim per queue"
    [owner] = {row.lease_owner for row in rows.values()}
    assert owner.startswith(worker.name), owner
    pipelines = {key: apply_tuned(reference_pipeline, parts) for key, parts in tuned_parts.items()}
    for job in jobs:
        row: Job = rows[job["id"]]
        where = f"job {job['index']} of tenant {job['tenant']} on {job['model'] or 'the base'}: {row.error}"
        if job["model"] == other_base:
            assert (row.status, row.error_code) == ("failed", "input"), where
            assert "lensq-smol" in row.error and "tuned from" in row.error, where
            continue
        assert row.status == "succeeded", where
        pipeline = pipelines[job["tenant"]] if job["model"] else reference_pipeline
        assert_same(row.result, expected(pipeline, reference_pipeline, job["index"], job["task"]), where)
        assert row.model_version == pipeline.model_version, where
    # the versions really changed answers: tenant a's version, tenant b's and the base differ on one image, and
    # tenant b's caption version captions differently from the base
    answers = [expected(pipeline, reference_pipeline, 100)["probabilities"]
               for pipeline in (pipelines["a"], pipelines["b"], reference_pipeline)]
    assert answers[0] != answers[1] and answers[0] != answers[2] and answers[1] != answers[2]
    assert expected(pipelines["b-caption"], reference_pipeline, 230, "caption") != expected(
        reference_pipeline, reference_pipeline, 230, "caption")
    assert "applied ft:lensq-tiny:" in worker.log_path.read_text(errors="replace")
