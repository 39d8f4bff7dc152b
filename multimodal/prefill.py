"""A prompt's prefill that runs the LM's top decoder layer in full on the last position only.

Greedy generation reads one row of a prompt's logits: its last position's. The layers below the top one are
needed at every position (later positions attend to them), but the top layer's output at the other positions
feeds nothing. There the top layer needs only its keys and values, for the cache that later tokens attend to:
two projections, instead of the query, the attention, the output projection and the MLP as well. In
lensq-tiny (3 layers) that is about a quarter of a prompt's LM FLOPs; in a 30-layer LM about 3%.

The top layer gets a forward pre-hook that does nothing unless a call runs inside `last_position_only(lm)`
(a context variable: other threads and other calls see the LM unchanged). Inside it, the hook writes the
other positions' keys and values into the cache itself and hands the layer the last position alone, with
that position's row of the attention mask and rotary angles. The layer then appends its own key and value
to the cache and attends over all of them, as it would have. Shapes: hidden (B, T, D) → (B, 1, D).
"""
from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import torch
from torch import nn
from transformers import DynamicCache

_ACTIVE: ContextVar[bool] = ContextVar("lensq_last_position_only", default=False)
_HOOKED = "_lensq_last_position_hook"  # attribute on the top layer once it carries the hook


def top_decoder_layer(lm: nn.Module) -> nn.Module | None:
    """The LM's last decoder layer if it has the parts the hook uses (a Llama-style layer), else None."""
    decoder = getattr(lm, "model", None)
    layers = getattr(decoder, "layers", None)
    if not layers:
        return None
    layer = layers[-1]
    attention = getattr(layer, "self_attn", None)
    needed = (getattr(layer, "input_layernorm", None), getattr(attention, "k_proj", None),
              getattr(attention, "v_proj", None), getattr(attention, "head_dim", None),
              getattr(attention, "layer_idx", None), _rotary(attention))
    return layer if all(part is not None for part in needed) else None


def _rotary(attention: Any):
    """The rotary function of the attention's own modelling module (each model family ships its own)."""
    module = sys.modules.get(type(attention).__module__) if attention is not None else None
    return getattr(module, "apply_rotary_pos_emb", None)


@contextmanager
def last_position_only(lm: nn.Module) -> Iterator[bool]:
    """Within the block, a multi-token call of `lm` with a cache computes the top layer at the last position
    only (its logits are the only ones correct; the cache is complete). Yields whether the LM supports it."""
    layer = top_decoder_layer(lm)
    if layer is None:
        yield False
        return
    if not getattr(layer, _HOOKED, False):
        layer.register_forward_pre_hook(_cache_all_but_last, with_kwargs=True)
        setattr(layer, _HOOKED, True)
    token = _ACTIVE.set(True)
    try:
        yield True
    finally:
        _ACTIVE.reset(token)


def _cache_all_but_last(layer: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
    """Forward pre-hook of the top layer: caches keys and values of positions 0..T-2, passes on position T-1."""
    if not _ACTIVE.get():
        return None
    hidden = args[0] if args else kwargs.get("hidden_states")
    cache_key = "cache" if "cache" in kwargs else "past_key_values"
    cache, mask = kwargs.get(cache_key), kwargs.get("attention_mask")
    angles = kwargs.get("position_embeddings")
    # Only a 4-D mask tensor (B, 1, T, T) can be cut to the last query's row: a 2-D one (flash attention) or a
    # block mask is left alone, and so is any cache but the growing one that generation uses.
    cuttable_mask = mask is None or (isinstance(mask, torch.Tensor) and mask.dim() == 4)
    if hidden is None or hidden.shape[1] < 2 or not isinstance(cache, DynamicCache) or angles is None \
            or not cuttable_mask:
        return None
    attention = layer.self_attn
    earlier = layer.input_layernorm(hidden[:, :-1])  # (B, T-1, D)
    shape = (*earlier.shape[:-1], -1, attention.head_dim)
    keys = attention.k_proj(earlier).view(shape).transpose(1, 2)  # (B, H_kv, T-1, head_dim)
    values = attention.v_proj(earlier).view(shape).transpose(1, 2)
    cos, sin = angles
    keys, _ = _rotary(attention)(keys, keys, cos[:, :-1], sin[:, :-1])
    cache.update(keys, values, attention.layer_idx)
    kwargs = dict(kwargs, position_embeddings=(cos[:, -1:], sin[:, -1:]))
    if mask is not None:
        kwargs["attention_mask"] = mask[:, :, -1:, :]
    if kwargs.get("position_ids") is not None:
        kwargs["position_ids"] = kwargs["position_ids"][:, -1:]
    if args:
        return (hidden[:, -1:], *args[1:]), kwargs
    return args, dict(kwargs, hidden_states=hidden[:, -1:])
