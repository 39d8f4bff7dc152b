"""The prompt's prefill that runs the top decoder layer in full at the last position only (multimodal/prefill.py)."""
import threading

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from multimodal.generation import left_pad
from multimodal.lora_overlay import LoraOverlay
from multimodal.prefill import last_position_only, top_decoder_layer


def _prefill(lm, embeds, mask, last_only: bool):
    """One cached pass over a left-padded prompt batch → (last position's logits (B, V), the cache)."""
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.inference_mode():
        if last_only:
            with last_position_only(lm) as supported:
                assert supported
                out = lm(inputs_embeds=embeds, attention_mask=mask, position_ids=positions, use_cache=True,
                         logits_to_keep=1)
        else:
            out = lm(inputs_embeds=embeds, attention_mask=mask, position_ids=positions, use_cache=True,
                     logits_to_keep=1)
    return out.logits[:, -1], out.cache


def _rows_seen_by_top_mlp(lm):
    """Records the (B, T) of every input that reaches the top layer's MLP."""
    seen = []
    handle = top_decoder_layer(lm).mlp.register_forward_hook(lambda module, args, out: seen.append(args[0].shape[:2]))
    return seen, handle


def _padded_batch(lm, lengths, seed=0):
    generator = torch.Generator().manual_seed(seed)
    vocab = lm.config.vocab_size
    ids, mask = left_pad([torch.randint(4, vocab, (n,), generator=generator).tolist() for n in lengths], pad_id=0)
    return lm.get_input_embeddings()(ids), mask


def _assert_same_prefill(lm, embeds, mask):
    seen, handle = _rows_seen_by_top_mlp(lm)
    try:
        full_logits, full_cache = _prefill(lm, embeds, mask, last_only=False)
        fast_logits, fast_cache = _prefill(lm, embeds, mask, last_only=True)
    finally:
        handle.remove()
    batch, width = mask.shape
    assert seen == [(batch, width), (batch, 1)]  # the top layer's MLP really ran on one position the second time
    torch.testing.assert_close(fast_logits, full_logits, rtol=1e-4, atol=1e-4)
    assert full_logits.argmax(-1).tolist() == fast_logits.argmax(-1).tolist()
    for full, fast in zip(full_cache.layers, fast_cache.layers):  # every layer's keys and values, every position
        torch.testing.assert_close(fast.keys, full.keys)
        torch.testing.assert_close(fast.values, full.values)


def test_shipped_tiny_lm_left_padded_prompts(tiny_pipeline):
    lm = tiny_pipeline.model.lm
    embeds, mask = _padded_batch(lm, [9, 5, 12, 7])
    _assert_same_prefill(lm, embeds, mask)


def test_grouped_query_attention_and_no_padding():
    # SmolLM2's shape in small: fewer key/value heads than query heads; equal lengths give HF no mask at all.
    torch.manual_seed(0)
    lm = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=48, intermediate_size=96, num_hidden_layers=2,
                                      num_attention_heads=6, num_key_value_heads=2, max_position_embeddings=64)).eval()
    for lengths in ([10, 10, 10], [10, 4, 7]):
        embeds, mask = _padded_batch(lm, lengths, seed=len(set(lengths)))
        _assert_same_prefill(lm, embeds, mask)


def test_with_a_lora_overlay_active(tiny_pipeline):
    lm = tiny_pipeline.model.lm
    overlay = LoraOverlay.for_lm(lm, ("q_proj", "k_proj", "v_proj", "o_proj"), r=4, alpha=8,
                                 generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        for b in overlay.b.values():
            b.normal_(0, 0.5)  # a trained-looking update, so the overlay changes keys and values
    overlay.attach(lm)
    embeds, mask = _padded_batch(lm, [8, 6, 11])
    base_logits, _ = _prefill(lm, embeds, mask, last_only=False)
    with overlay.active():
        tuned_logits, _ = _prefill(lm, embeds, mask, last_only=False)
        assert not torch.allclose(tuned_logits, base_logits, atol=1e-3)
        _assert_same_prefill(lm, embeds, mask)


def test_outside_the_block_and_in_other_threads_the_lm_is_unchanged(tiny_pipeline):
    lm = tiny_pipeline.model.lm
    embeds, mask = _padded_batch(lm, [6, 9])
    seen, handle = _rows_seen_by_top_mlp(lm)
    try:
        with last_position_only(lm):
            other = threading.Thread(target=_prefill, args=(lm, embeds, mask, False))
            other.start()
            other.join()
        _prefill(lm, embeds, mask, last_only=False)  # the hook stays on the layer, inactive
    finally:
        handle.remove()
    assert seen == [(2, 9), (2, 9)]


@pytest.mark.parametrize("lm", [torch.nn.Linear(2, 2), torch.nn.Module()])
def test_a_model_without_llama_layers_runs_as_it_is(lm):
    with last_position_only(lm) as supported:
        assert not supported
