"""Training corpora as tensors: images stored once as uint8, examples pre-tokenized, batches collated."""
from __future__ import annotations

import random
from dataclasses import dataclass, field

import numpy as np
import torch

from .generation import right_pad
from .prompts import encode_prompt, encode_target


@dataclass
class ImageStore:
    """Images kept once as uint8 (N, 3, S, S); examples refer to them by index."""

    size: int
    arrays: list[np.ndarray] = field(default_factory=list)
    _tensor: torch.Tensor | None = None

    def add(self, image) -> int:
        image = image.convert("RGB")
        if image.size != (self.size, self.size):
            image = image.resize((self.size, self.size))
        self.arrays.append(np.asarray(image, dtype=np.uint8).transpose(2, 0, 1).copy())
        self._tensor = None
        return len(self.arrays) - 1

    def pixels(self, indices, mean, std) -> torch.Tensor:
        if self._tensor is None:
            self._tensor = torch.from_numpy(np.stack(self.arrays))
        batch = self._tensor[torch.as_tensor(indices)].float() / 255.0  # (B, 3, S, S)
        return (batch - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]


@dataclass
class TokenizedExample:
    image: int  # index into the ImageStore
    prompt: list[int]
    target: list[int]  # generation target (with EOS), or [class index] for classification


def tokenize_generative(tokenizer, n_image_tokens: int, image: int, task: str, target: str, **fields) -> TokenizedExample:
    return TokenizedExample(image, encode_prompt(tokenizer, task, n_image_tokens, **fields), encode_target(tokenizer, target))


def generative_batch(examples: list[TokenizedExample], pad_id: int):
    """→ input_ids (B, T), attention_mask (B, T), prompt_lengths (B,), image indices, right-padded."""
    ids, mask = right_pad([e.prompt + e.target for e in examples], pad_id)
    prompt_lengths = torch.tensor([len(e.prompt) for e in examples])
    return ids, mask, prompt_lengths, [e.image for e in examples]


def sample_mixture(rng: random.Random, sources: list[tuple[list, float]], batch_size: int) -> list:
    """Draw a batch from several example lists with the given weights."""
    lists, weights = zip(*sources)
    picks = rng.choices(range(len(lists)), weights=weights, k=batch_size)
    return [rng.choice(lists[k]) for k in picks]
