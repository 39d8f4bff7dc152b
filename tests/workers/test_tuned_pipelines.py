"""workers/adapters.py over the real ledger and library: versions loaded by id, kept least recently used first out."""
from __future__ import annotations

import hashlib
import uuid

import pytest

from db.models import ModelVersion
from image_factory import shape_image
from workers.adapters import TunedPipelines, VersionUnusable
from workers.config import WorkerSettings

LABELS = ("positive", "negative", "neutral")


@pytest.fixture(scope="module")
def parts(reference_pipeline):
    """A sentiment version trained for a few steps: enough to answer differently from the base."""
    from multimodal.finetune import TuneExample, TuneSettings, fine_tune

    examples = [TuneExample(image=shape_image(i), text="", target=LABELS[i % 3]) for i in range(16)]
    settings = TuneSettings(task="sentiment", max_steps=4, batch_size=4, eval_every=4, checkpoint_every=4,
                            warmup_steps=1, learning_rate=5e-3)
    return fine_tune(reference_pipeline, settings, examples[:12], examples[12:])


def add_version(session_factory, tenant_id: uuid.UUID, parts, base_model: str = "lensq-tiny") -> uuid.UUID:
    with session_factory.begin() as session:
        version = ModelVersion(tenant_id=tenant_id, name=f"ft:{base_model}:t:custom:{uuid.uuid4().hex[:8]}",
                               base_model=base_model, task=parts.task, weights=parts.weights,
                               weights_sha256=hashlib.sha256(parts.weights).hexdigest(), config=parts.config)
        session.add(version)
        session.flush()
        return version.id


def test_versions_are_loaded_once_and_the_least_recently_used_goes_first(reference_pipeline, parts, tenant,
                                                                          session_factory, database_url):
    from multimodal.finetune import apply_tuned

    ids = [add_version(session_factory, tenant.id, parts) for _ in range(3)]
    cache = TunedPipelines(2, WorkerSettings(model="lensq-tiny"), database_url)
    first = cache.get(reference_pipeline, ids[0])
    assert cache.get(reference_pipeline, ids[0]) is first
    second = cache.get(reference_pipeline, ids[1])
    assert cache.get(reference_pipeline, ids[0]) is first  # now the most recently used: ids[1] goes next
    cache.get(reference_pipeline, ids[2])
    assert len(cache) == 2
    assert cache.get(reference_pipeline, ids[0]) is first
    assert cache.get(reference_pipeline, ids[1]) is not second  # it was evicted, and is loaded again

    images, texts = [shape_image(i) for i in range(20, 24)], ["", "what a day", "", "meh"]
    base_before = reference_pipeline.sentiment(images, texts)
    from_cache = first.sentiment(images, texts)
    assert from_cache == apply_tuned(reference_pipeline, parts).sentiment(images, texts)
    assert from_cache != base_before  # the version is used, not the base
    assert reference_pipeline.sentiment(images, texts) == base_before  # and the base is untouched


def test_a_version_that_cannot_run_here_says_why(reference_pipeline, parts, tenant, session_factory, database_url):
    cache = TunedPipelines(2, WorkerSettings(model="lensq-tiny"), database_url)
    with pytest.raises(VersionUnusable, match="no longer exists"):
        cache.get(reference_pipeline, uuid.uuid4())
    elsewhere = add_version(session_factory, tenant.id, parts, base_model="lensq-smol")
    with pytest.raises(VersionUnusable, match="tuned from lensq-smol, but this worker runs lensq-tiny"):
        cache.get(reference_pipeline, elsewhere)
    assert len(cache) == 0
