"""The next batch's images through the vision tower on the claim-ahead thread: only where the model's call would
read them from the embedding cache, never changing a result, and never failing a job of its own."""
from __future__ import annotations

import hashlib
import logging
import uuid

import pytest

from db.models import Job
from db.queries import ClaimedJob
from image_factory import shape_png
from queued_jobs import enqueue_captions
from workers.batch_runner import CallBudget, decode_all, encode_ahead, run_batch
from workers.config import WorkerSettings
from workers.metrics import WORKER_REGISTRY

BUDGET = CallBudget(seconds=120, grace=10)


@pytest.fixture
def pipeline(reference_pipeline):
    """The loaded model behind a pipeline of its own, with an empty cache of 64 embeddings."""
    from multimodal import Pipeline

    return Pipeline(reference_pipeline.model, reference_pipeline.model_version, embedding_cache_size=64)


def claimed(task: str, index: int, params: dict | None = None, version: uuid.UUID | None = None) -> ClaimedJob:
    data = shape_png(index)
    return ClaimedJob(id=uuid.uuid4(), task=task, params=params or {}, image_data=data,
                      image_sha256=hashlib.sha256(data).hexdigest(), model_version_id=version)


def encoded_ahead(task: str) -> float:
    return WORKER_REGISTRY.get_sample_value("lensq_worker_images_encoded_ahead_total", {"task": task}) or 0.0


def test_a_batch_encoded_ahead_runs_on_its_cached_embeddings_with_the_same_results(pipeline, reference_pipeline):
    jobs = [claimed("vqa", i % 5, {"question": "what shape is in the image?"}) for i in range(8)]  # 5 images
    expected = run_batch(reference_pipeline, jobs, BUDGET)
    decoded = decode_all(pipeline, jobs)
    before = encoded_ahead("vqa")

    assert encode_ahead(pipeline, jobs, decoded, BUDGET) == 5  # each distinct image once
    assert (pipeline.embedding_cache.hits, pipeline.embedding_cache.misses) == (0, 5)
    assert encoded_ahead("vqa") - before == 5
    outcomes = run_batch(pipeline, jobs, BUDGET, decoded=decoded)
    assert pipeline.embedding_cache.misses == 5, "the model's call encoded nothing again"
    assert [(o.result, o.error) for o in outcomes] == [(o.result, o.error) for o in expected]
    assert all(o.result["answer"] for o in outcomes)


def test_only_jobs_whose_call_reads_the_base_cache_are_encoded_ahead(pipeline):
    # classify reads the CLIP tower's own features, and a fine-tuned version's generation its own projector's:
    # embeddings made for them would never be read.
    jobs = [claimed("classify", 1, {"labels": ["circle", "square"]}), claimed("caption", 2, version=uuid.uuid4()),
            claimed("sentiment", 3, {"text": "lovely"}), claimed("caption", 4)]
    assert encode_ahead(pipeline, jobs, decode_all(pipeline, jobs), BUDGET) == 2
    assert {key for _, key in pipeline.embedding_cache.entries} == {jobs[2].image_sha256, jobs[3].image_sha256}


def test_a_cache_without_room_for_two_batches_is_not_filled_ahead(reference_pipeline):
    from multimodal import Pipeline

    small = Pipeline(reference_pipeline.model, reference_pipeline.model_version, embedding_cache_size=5)
    jobs = [claimed("caption", i) for i in range(3)]
    assert encode_ahead(small, jobs, decode_all(small, jobs), BUDGET) == 0
    assert not small.embedding_cache.entries


def test_an_image_that_failed_to_decode_is_left_to_its_own_error(pipeline):
    jobs = [claimed("caption", 1), ClaimedJob(id=uuid.uuid4(), task="caption", params={}, image_data=b"not an image",
                                              image_sha256="0" * 64)]
    decoded = decode_all(pipeline, jobs)
    assert encode_ahead(pipeline, jobs, decoded, BUDGET) == 1
    outcomes = run_batch(pipeline, jobs, BUDGET, decoded=decoded)
    assert outcomes[0].result["caption"] and outcomes[1].error_code == "input"


def test_a_failure_ahead_leaves_the_images_to_the_models_call(reference_pipeline, caplog):
    from multimodal import Pipeline

    class TowerFailsOnce(Pipeline):
        """The real pipeline, except that its first encode raises (as an out-of-memory error would)."""

        failed = False

        def image_embeddings(self, images, image_keys=None):
            if not self.failed:
                self.failed = True
                raise RuntimeError("out of memory")
            return super().image_embeddings(images, image_keys)

    flaky = TowerFailsOnce(reference_pipeline.model, reference_pipeline.model_version, embedding_cache_size=64)
    jobs = [claimed("caption", i) for i in range(3)]
    decoded = decode_all(flaky, jobs)
    with caplog.at_level(logging.WARNING, logger="workers.batch_runner"):
        assert encode_ahead(flaky, jobs, decoded, BUDGET) == 0
    assert "encoding 3 images ahead failed" in caplog.text
    outcomes = run_batch(flaky, jobs, BUDGET, decoded=decoded)
    assert [o.result for o in outcomes] == [o.result for o in run_batch(reference_pipeline, jobs, BUDGET)]
    assert flaky.embedding_cache.misses == 3


def test_a_backlog_drained_by_one_message_encodes_each_later_batch_ahead(ledger_env, session_factory, tenant, pipeline,
                                                                         reference_pipeline, monkeypatch):
    """40 queued captions, batches of 16: the 2nd and 3rd batches (16 + 8 images) are claimed and encoded while the
    model runs the one before; every image is encoded once, and every result is the pipeline's own."""
    import workers.model
    from workers.tasks import drain_queue

    monkeypatch.setattr(workers.model, "_pipeline", pipeline)
    queue = f"ahead-{uuid.uuid4().hex[:8]}"
    shas = enqueue_captions(session_factory, tenant, queue, 40)
    before = encoded_ahead("caption")

    settings = WorkerSettings(batch_size=16, batch_fill_wait_seconds=0, max_batches_per_message=8)
    assert drain_queue(queue=queue, worker_id="test/encode-ahead", settings=settings) == 40

    assert encoded_ahead("caption") - before == 24
    assert (pipeline.embedding_cache.hits, pipeline.embedding_cache.misses) == (24, 40)
    with session_factory() as session:
        jobs = {job.image_sha256: job for job in session.query(Job).filter(Job.queue == queue)}
    images = [reference_pipeline.prepare(shape_png(index)) for index in range(40)]
    captions = reference_pipeline.caption(images)
    assert [jobs[sha].status for sha in shas] == ["succeeded"] * 40
    assert [jobs[sha].result["caption"] for sha in shas] == captions
