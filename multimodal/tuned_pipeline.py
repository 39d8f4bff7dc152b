"""A fine-tuned version served over a base Pipeline: its tuned parts are its own, every base model object is shared."""
from __future__ import annotations

from collections.abc import Hashable, Sequence

import torch
from PIL import Image
from torch import nn

from .generation import greedy_generate, right_pad
from .pipeline import check_same_length, distinct_labels, label_scores
from .prompts import encode_prompt
from .tuned_parts import ContrastiveParts, GenerativeParts, SentimentParts
from .tuning import sentiment_prompts


class TunedPipeline:
    """The Pipeline's batched API (caption, answer, sentiment, classify; same signatures and result shapes).

    The task the version was tuned for runs through its parts; the others are the base pipeline's own. Nothing
    of the base is modified, so any number of these can serve side by side over one base model.
    """

    def __init__(self, base, parts: nn.Module, model_version: str):
        self.base, self.parts, self.model_version = base, parts, model_version
        self.model = base.model
        self.image_size = base.image_size

    def prepare(self, data: bytes, *args, **kwargs) -> Image.Image:
        return self.base.prepare(data, *args, **kwargs)

    def pixels(self, images: Sequence[Image.Image]) -> torch.Tensor:
        return self.base.pixels(images)

    def caption(self, images: Sequence[Image.Image], image_keys: Sequence[Hashable] | None = None) -> list[str]:
        if not isinstance(self.parts, GenerativeParts):
            return self.base.caption(images, image_keys)
        return self._generate(images, "caption", [{} for _ in images])

    def answer(self, images: Sequence[Image.Image], questions: Sequence[str],
               image_keys: Sequence[Hashable] | None = None) -> list[str]:
        if not isinstance(self.parts, GenerativeParts):
            return self.base.answer(images, questions, image_keys)
        check_same_length(images, questions, "questions")
        return self._generate(images, "vqa", [{"question": q.strip()} for q in questions])

    @torch.inference_mode()
    def _generate(self, images, task: str, fields: list[dict[str, str]]) -> list[str]:
        """Greedy generation with this version's projector and LoRA overlay (image embeddings are its own: no cache)."""
        if not len(images):
            return []
        model, tokenizer = self.model, self.model.tokenizer
        tokens, pooled = model.vision(self.pixels(images).to(model.device, model.projector_dtype))
        image_embeds = self.parts.image_embeddings(model, tokens, pooled)
        prompts = [encode_prompt(tokenizer, task, model.n_image_tokens, **f) for f in fields]
        with self.parts.lora.active():
            outputs = greedy_generate(model, prompts, image_embeds, model.cfg.max_new_tokens)
        return [tokenizer.decode(ids, skip_special_tokens=True).strip() for ids in outputs]

    @torch.inference_mode()
    def sentiment(self, images: Sequence[Image.Image], texts: Sequence[str],
                  image_keys: Sequence[Hashable] | None = None) -> list[dict]:
        if not isinstance(self.parts, SentimentParts):
            return self.base.sentiment(images, texts, image_keys)
        check_same_length(images, texts, "texts")
        if not images:
            return []
        model = self.model
        # the base projector's embeddings (and its cache): this version changes only the head and its adapter
        image_embeds = self.base.image_embeddings(images, image_keys)
        input_ids, mask = right_pad(sentiment_prompts(model, texts), model.tokenizer.pad_token_id)
        logits = self.parts.logits(model, input_ids.to(model.device), mask.to(model.device), image_embeds)
        labels = model.cfg.heads.sentiment_labels
        return [
            {"label": labels[int(row.argmax())], "probabilities": {lab: round(float(p), 6) for lab, p in zip(labels, row)}}
            for row in logits.float().softmax(-1).cpu()
        ]

    @torch.inference_mode()
    def classify(self, images: Sequence[Image.Image], labels: Sequence[Sequence[str]]) -> list[dict]:
        if not isinstance(self.parts, ContrastiveParts):
            return self.base.classify(images, labels)
        check_same_length(images, labels, "labels")
        if not images:
            return []
        model = self.model
        distinct = distinct_labels(labels)
        _, image = model.vision(self.pixels(images).to(model.device, model.projector_dtype))
        text = model.clip.encode_text(self.base.text_tokenizer(distinct).to(model.device))
        logits = self.parts.similarity(image, text, model.clip.logit_scale).cpu()  # (B, L)
        return label_scores(logits, labels, distinct)
