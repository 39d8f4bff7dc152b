"""Batched greedy generation over spliced prompts: left padding, KV cache, early stop."""
from __future__ import annotations

import torch


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

    With use_cache=False every step re-runs the whole sequence: slow, kept as the reference the
    cached path is tested against.
    """
    tokenizer = model.tokenizer
    eos_id, pad_id = tokenizer.eos_token_id, tokenizer.pad_token_id
    input_ids, mask = left_pad(prompts, pad_id)
    input_ids, mask = input_ids.to(model.device), mask.to(model.device)
    embeds = model.embed(input_ids, image_embeds)  # (B, T, D)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    finished = torch.zeros(len(prompts), dtype=torch.bool, device=model.device)
    generated: list[torch.Tensor] = []
    past = None
    step_embeds, step_positions = embeds, positions
    for _ in range(max_new_tokens):
        out = model.lm(inputs_embeds=step_embeds, attention_mask=mask, position_ids=step_positions,
                       cache=past, use_cache=use_cache)
        next_ids = out.logits[:, -1].argmax(-1)  # (B,)
        next_ids = torch.where(finished, torch.full_like(next_ids, pad_id), next_ids)
        generated.append(next_ids)
        finished |= next_ids == eos_id
        if bool(finished.all()):
            break
        new_embeds = model.lm.get_input_embeddings()(next_ids)[:, None]  # (B, 1, D)
        new_positions = positions[:, -1:] + 1
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        positions = torch.cat([positions, new_positions], dim=1)
        embeds = torch.cat([embeds, new_embeds], dim=1)
        if use_cache:
            past, step_embeds, step_positions = out.cache, new_embeds, new_positions
        else:
            step_embeds, step_positions = embeds, positions
    tokens = torch.stack(generated, dim=1).tolist() if generated else [[] for _ in prompts]
    return [_until_eos(row, eos_id) for row in tokens]


def _until_eos(row: list[int], eos_id: int) -> list[int]:
    return row[: row.index(eos_id)] if eos_id in row else row
