"""Prompt templates and their tokenization (the image placeholder stays a single marker id)."""
from __future__ import annotations

from .splice import IMAGE_PLACEHOLDER_ID, expand_image_placeholder

IMAGE_MARK = "<image>"
PROMPTS = {
    "caption": "<image> caption:",
    # The question comes first so that, under causal attention, every image position can already
    # relate itself to what is asked (a "is there a red shape?" match is then local to each token).
    "vqa": "question: {question} <image> answer:",
    "sentiment": "<image> post: {text}",
}


def encode_prompt(tokenizer, task: str, n_image_tokens: int, **fields: str) -> list[int]:
    """Token ids of a task prompt with n_image_tokens placeholders where the image goes."""
    before, after = PROMPTS[task].format(**fields).split(IMAGE_MARK)
    ids = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    ids += tokenizer.encode(before, add_special_tokens=False) if before.strip() else []
    ids += [IMAGE_PLACEHOLDER_ID]
    ids += tokenizer.encode(after, add_special_tokens=False)
    return expand_image_placeholder(ids, n_image_tokens)


def encode_target(tokenizer, text: str) -> list[int]:
    """Target tokens the LM learns to generate after the prompt, ending with EOS."""
    return tokenizer.encode(" " + text.strip(), add_special_tokens=False) + [tokenizer.eos_token_id]
