"""Batched greedy generation over spliced prompts: left padding, KV cache, early stop."""
from __future__ import annotations

from contextlib import nullcontext

import torch

from .prefill import last_position_only


def pad(sequences: list[list[int]], pad_id: int, side: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad token lists on the "left" (generation) or "right" (training) → input_ids (B, T), attention_mask (B, T)."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        span = slice(width - len(seq), width) if side == "left" else slice(0, len(seq))
        ids[row, span] = torch.tensor(seq, dtype=torch.long)
        mask[row, span] = 1
    return ids, mask


def left_pad(sequences: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    return pad(sequences, pad_id, "left")


def right_pad(sequences: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    return pad(sequences, pad_id, "right")


@torch.inference_mode()
def greedy_generate(model, prompts: list[list[int]], image_embeds: torch.Tensor, max_new_tokens: int, use_cache: bool = True) -> list[list[int]]:
    """Greedy continuation of each prompt (with K image placeholders) given image_embeds (B, K, D).

    A row that emits EOS leaves the batch (its KV cache rows too), so the steps after it cost only the rows still
    writing: a batch of short and long answers pays for the long ones alone, not for all B rows to the longest.
    With use_cache=False every step re-runs the whole sequence: slow, kept as the reference the cached path is
    tested against.
    """
    tokenizer = model.tokenizer
    eos_id, pad_id = tokenizer.eos_token_id, tokenizer.pad_token_id
    input_ids, mask = left_pad(prompts, pad_id)
    input_ids, mask = input_ids.to(model.device), mask.to(model.device)
    embeds = model.embed(input_ids, image_embeds)  # (B, T, D)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    outputs: list[list[int]] = [[] for _ in prompts]
    rows = list(range(len(prompts)))  # the prompt each live row belongs to
    past = None
    step_embeds, step_positions = embeds, positions
    for step in range(max_new_tokens):
        # logits_to_keep=1: the vocabulary projection runs on the last position only, not on the whole prompt;
        # likewise the prompt's pass runs the top decoder layer in full there only (prefill.py).
        with last_position_only(model.lm) if use_cache and step == 0 else nullcontext():
            out = model.lm(inputs_embeds=step_embeds, attention_mask=mask, position_ids=step_positions,
                           cache=past, use_cache=use_cache, logits_to_keep=1)
        next_ids = out.logits[:, -1].argmax(-1)  # (B_live,)
        for row, token in zip(rows, next_ids.tolist()):
            outputs[row].append(token)
        live = next_ids != eos_id
        if not bool(live.any()):
            break
        if not bool(live.all()):
            keep = live.nonzero().squeeze(1)  # (B_kept,)
            rows = [rows[i] for i in keep.tolist()]
            next_ids, mask, positions, embeds = next_ids[keep], mask[keep], positions[keep], embeds[keep]
            if use_cache:
                out.cache.batch_select_indices(keep)
        new_embeds = model.lm.get_input_embeddings()(next_ids)[:, None]  # (B_live, 1, D)
        new_positions = positions[:, -1:] + 1
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        if use_cache:
            # The cache holds the past: only the newest position and embedding are needed, not the whole sequence
            # (copying (B, T, D) every step cost about 5% of a caption batch).
            past, step_embeds, step_positions = out.cache, new_embeds, new_positions
            positions, embeds = new_positions, new_embeds
        else:
            positions = torch.cat([positions, new_positions], dim=1)
            embeds = torch.cat([embeds, new_embeds], dim=1)
            step_embeds, step_positions = embeds, positions
    return [_until_eos(row, eos_id) for row in outputs]


def _until_eos(row: list[int], eos_id: int) -> list[int]:
    return row[: row.index(eos_id)] if eos_id in row else row
