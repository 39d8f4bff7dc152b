"""Image placeholder splice: prompts carry placeholder ids where the projected image embeddings go."""
from __future__ import annotations

import torch

IMAGE_PLACEHOLDER_ID = -200  # never a real token id; marks one image-embedding position
IGNORE_INDEX = -100  # label value the LM loss skips (image and prompt positions)


def expand_image_placeholder(prompt_ids: list[int], n_image_tokens: int) -> list[int]:
    """Replace the single placeholder in a tokenized prompt by n_image_tokens placeholders."""
    if prompt_ids.count(IMAGE_PLACEHOLDER_ID) != 1:
        raise ValueError("a prompt must contain exactly one image placeholder")
    at = prompt_ids.index(IMAGE_PLACEHOLDER_ID)
    return prompt_ids[:at] + [IMAGE_PLACEHOLDER_ID] * n_image_tokens + prompt_ids[at + 1 :]


def labels_for(input_ids: torch.Tensor, prompt_lengths: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """LM labels: the target tokens only; prompt, image and padding positions get IGNORE_INDEX.

    input_ids (B, T) are right-padded; prompt_lengths (B,) counts each row's prompt (image included).
    """
    positions = torch.arange(input_ids.shape[1], device=input_ids.device)[None, :]  # (1, T)
    is_target = (positions >= prompt_lengths[:, None]) & attention_mask.bool()
    labels = torch.where(is_target, input_ids, torch.full_like(input_ids, IGNORE_INDEX))
    return labels.masked_fill(input_ids == IMAGE_PLACEHOLDER_ID, IGNORE_INDEX)


def splice_image_embeddings(
    token_embeddings: torch.nn.Embedding, input_ids: torch.Tensor, image_embeds: torch.Tensor
) -> torch.Tensor:
    """Embed input_ids (B, T) and write image_embeds (B, K, D) at the K placeholder positions of each row."""
    is_image = input_ids == IMAGE_PLACEHOLDER_ID  # (B, T)
    counts = is_image.sum(dim=1)
    if not bool((counts == image_embeds.shape[1]).all()):
        raise ValueError(f"each row needs {image_embeds.shape[1]} image placeholders, got {counts.tolist()}")
    embeds = token_embeddings(input_ids.clamp(min=0))  # (B, T, D)
    return embeds.masked_scatter(is_image[..., None], image_embeds.to(embeds.dtype))
