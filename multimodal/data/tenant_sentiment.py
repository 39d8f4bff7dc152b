"""Sentiment sets relabelled by a tenant's own rule: data the base model was not trained on, for fine-tuning.

The images and posts are those of `sentiment_dataset`; only the label rule differs:
* "ironic": the tenant's posts are ironic, so a post's sentiment counts as its opposite (neutral stays
  neutral), combined with the image's as usual;
* "image_first": in a conflict the image wins (the base rule calls a conflict neutral).
"""

from __future__ import annotations

import dataclasses

from multimodal.data.sentiment import OPPOSITE, SentimentExample, combined_label, sentiment_dataset

TENANT_RULES = ("ironic", "image_first")


def tenant_label(example: SentimentExample, rule: str) -> str:
    """The label `rule` gives an example (from its image's and its post's own sentiments)."""
    if rule == "ironic":
        return combined_label(example.image_sentiment, OPPOSITE.get(example.text_sentiment, "neutral"))
    if rule == "image_first":
        return example.image_sentiment if example.subset == "conflict" else example.label
    raise ValueError(f"unknown tenant rule {rule!r}; expected one of {TENANT_RULES}")


def tenant_sentiment_dataset(n: int, seed: int, rule: str = "ironic", image_size: int = 64) -> list[SentimentExample]:
    """`n` generated examples labelled by `rule`."""
    return [dataclasses.replace(e, label=tenant_label(e, rule)) for e in sentiment_dataset(n, seed, image_size)]
