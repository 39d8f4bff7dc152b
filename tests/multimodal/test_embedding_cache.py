"""Image embeddings keyed by image hash: each distinct image encoded once, recent ones reused, outputs unchanged."""
from __future__ import annotations

import io
import sys
import threading

import pytest
import torch
from PIL import Image

from image_factory import shape_image
from multimodal import Pipeline, decode_image
from multimodal.pipeline import EmbeddingCache
from multimodal.preprocess import fit_to_model


@pytest.fixture
def images():
    """Shapes like the ones the checkpoint was trained on: short captions, so the tests stay fast."""
    return [shape_image(index) for index in (0, 1, 2, 4)]


def fresh(pipeline: Pipeline, size: int = 16) -> Pipeline:
    """The same loaded model behind a pipeline with its own, empty cache."""
    return Pipeline(pipeline.model, pipeline.model_version, embedding_cache_size=size)


def test_keyed_results_equal_unkeyed_and_a_repeat_is_not_encoded_again(tiny_pipeline, images):
    pipeline = fresh(tiny_pipeline)
    keys = ["a", "b", "c", "d"]
    plain = pipeline.caption(images)
    assert pipeline.caption(images, image_keys=keys) == plain
    assert (pipeline.embedding_cache.hits, pipeline.embedding_cache.misses) == (0, 4)
    assert pipeline.sentiment(images, ["lovely"] * 4, image_keys=keys) == pipeline.sentiment(images, ["lovely"] * 4)
    assert (pipeline.embedding_cache.hits, pipeline.embedding_cache.misses) == (4, 4)


def test_a_repeated_image_in_one_batch_is_encoded_once(tiny_pipeline, images):
    pipeline = fresh(tiny_pipeline)
    batch = [images[0], images[1], images[0], images[0]]
    embeds = pipeline.image_embeddings(batch, ["x", "y", "x", "x"])
    assert embeds.shape[0] == 4 and torch.equal(embeds[0], embeds[2])
    assert pipeline.embedding_cache.misses == 2 and pipeline.embedding_cache.hits == 2


def test_the_cache_is_bounded_and_keyed_by_model_version(tiny_pipeline, images):
    pipeline = fresh(tiny_pipeline, size=2)
    pipeline.image_embeddings(images[:3], ["a", "b", "c"])
    assert [key for _, key in pipeline.embedding_cache.entries] == ["b", "c"]  # "a", least recent, evicted
    assert all(version == pipeline.model_version for version, _ in pipeline.embedding_cache.entries)
    other = Pipeline(pipeline.model, "other-version", embedding_cache_size=2)
    other.embedding_cache = pipeline.embedding_cache  # a shared cache still never serves another version
    other.image_embeddings(images[1:2], ["b"])
    assert other.embedding_cache.misses == 4


def test_a_zero_sized_cache_keeps_nothing(tiny_pipeline, images):
    pipeline = fresh(tiny_pipeline, size=0)
    pipeline.image_embeddings(images, ["a", "b", "c", "d"])
    pipeline.image_embeddings(images, ["a", "b", "c", "d"])
    assert not pipeline.embedding_cache.entries and pipeline.embedding_cache.misses == 8


def test_the_cache_serves_one_thread_while_another_fills_it():
    """A worker fills the cache for its next batch on one thread while the model's thread reads it: lookups racing
    evictions never raise, and the LRU stays within its bound."""
    cache = EmbeddingCache(max_entries=4)
    row = torch.zeros(2, 3)
    errors: list[BaseException] = []
    stop = threading.Event()

    def fill() -> None:
        index = 0
        while not stop.is_set():
            cache.put(("v", index % 8), row)  # every put past the 4th evicts the least recent key
            index += 1

    filler = threading.Thread(target=fill)
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # the threads take turns every few bytecodes, so a racing eviction is likely
    filler.start()
    try:
        for index in range(200_000):
            try:
                cache.get(("v", index % 8))
            except BaseException as exc:  # a key evicted between its lookup and its move to the end
                errors.append(exc)
                break
    finally:
        stop.set()
        filler.join()
        sys.setswitchinterval(interval)
    assert not errors and len(cache.entries) <= 4


def _jpeg(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 100, 50)).save(buffer, "JPEG")
    return buffer.getvalue()


def test_a_large_jpeg_is_decoded_at_a_reduced_scale_that_still_covers_the_model(tiny_pipeline):
    data = _jpeg(4000, 3000)
    assert decode_image(data).size == (4000, 3000)
    assert decode_image(data, target_size=64).size == (500, 375)  # 1/8 scale: both sides still over 64
    assert decode_image(data, target_size=400).size == (1000, 750)  # 1/4: 1/8 would leave 375 < 400
    assert tiny_pipeline.prepare(data).size == (64, 64)


def test_prepare_leaves_non_jpeg_images_exactly_as_before(tiny_pipeline):
    image = Image.new("RGB", (300, 200), (10, 200, 30))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    data = buffer.getvalue()
    expected = tiny_pipeline.pixels([decode_image(data)])
    assert torch.equal(tiny_pipeline.pixels([tiny_pipeline.prepare(data)]), expected)
    assert tiny_pipeline.prepare(data).size == fit_to_model(decode_image(data), 64).size
