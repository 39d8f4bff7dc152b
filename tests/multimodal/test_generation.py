"""Batched greedy generation: KV cache, left padding, early stop."""
import random

import torch

from multimodal.data.easyvqa import generate_vqa
from multimodal.generation import greedy_generate, left_pad
from multimodal.prompts import encode_prompt


def _vqa_batch(pipe, n=6, seed=3):
    examples = generate_vqa(random.Random(seed), n, questions_per_image=1)
    # questions of different lengths so the batch really is left-padded
    prompts = [encode_prompt(pipe.model.tokenizer, "vqa", pipe.model.n_image_tokens, question=e.question) for e in examples]
    assert len({len(p) for p in prompts}) > 1
    return examples, prompts, pipe.model.encode_images(pipe.pixels([e.load_image() for e in examples]))


def test_left_pad_puts_padding_first():
    ids, mask = left_pad([[5, 6, 7], [8]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]


def test_cached_generation_equals_uncached_step_by_step(tiny_pipeline):
    _, prompts, embeds = _vqa_batch(tiny_pipeline)
    cached = greedy_generate(tiny_pipeline.model, prompts, embeds, max_new_tokens=12, use_cache=True)
    reference = greedy_generate(tiny_pipeline.model, prompts, embeds, max_new_tokens=12, use_cache=False)
    assert cached == reference
    assert all(len(ids) > 0 for ids in cached)


def test_cached_captions_equal_uncached_while_rows_leave_the_batch(tiny_pipeline):
    from multimodal.data.scenes import generate_scene

    rng = random.Random(11)
    images = [generate_scene(rng)[0] for _ in range(8)]
    prompts = [encode_prompt(tiny_pipeline.model.tokenizer, "caption", tiny_pipeline.model.n_image_tokens)] * len(images)
    embeds = tiny_pipeline.model.encode_images(tiny_pipeline.pixels(images))
    cached = greedy_generate(tiny_pipeline.model, prompts, embeds, max_new_tokens=32, use_cache=True)
    assert cached == greedy_generate(tiny_pipeline.model, prompts, embeds, max_new_tokens=32, use_cache=False)
    assert len({len(ids) for ids in cached}) > 1  # captions of different lengths: rows left the cache mid-way


def test_cached_generation_to_the_token_limit_equals_uncached(random_tiny):
    # an untrained decoder emits no EOS here, so every row runs to max_new_tokens
    prompts = [encode_prompt(random_tiny.tokenizer, "vqa", random_tiny.n_image_tokens, question=q)
               for q in ("what shape is this?", "is there a red shape in the image?")]
    embeds = random_tiny.encode_images(torch.rand(2, 3, 64, 64))
    cached = greedy_generate(random_tiny, prompts, embeds, max_new_tokens=20, use_cache=True)
    assert cached == greedy_generate(random_tiny, prompts, embeds, max_new_tokens=20, use_cache=False)
    assert [len(ids) for ids in cached] == [20, 20]


def test_left_padded_batch_equals_each_item_alone(tiny_pipeline):
    _, prompts, embeds = _vqa_batch(tiny_pipeline)
    together = greedy_generate(tiny_pipeline.model, prompts, embeds, max_new_tokens=12)
    alone = [greedy_generate(tiny_pipeline.model, [p], embeds[i : i + 1], max_new_tokens=12)[0] for i, p in enumerate(prompts)]
    assert together == alone


def test_captions_in_a_batch_equal_captions_alone(tiny_pipeline):
    from multimodal.data.scenes import generate_scene

    rng = random.Random(5)
    images = [generate_scene(rng)[0] for _ in range(5)]
    assert tiny_pipeline.caption(images) == [tiny_pipeline.caption([image])[0] for image in images]


def test_generation_stops_when_every_row_ended(random_tiny):
    prompts = [encode_prompt(random_tiny.tokenizer, "caption", random_tiny.n_image_tokens)] * 2
    embeds = random_tiny.encode_images(torch.zeros(2, 3, 64, 64))
    out = greedy_generate(random_tiny, prompts, embeds, max_new_tokens=5)
    assert all(len(row) <= 5 for row in out)
    assert random_tiny.tokenizer.eos_token_id not in out[0]
