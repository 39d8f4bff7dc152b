"""Per-method training inputs, batch losses and validation metrics for fine_tune, computed through the frozen base."""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from sklearn.metrics import f1_score

from .corpus import TokenizedExample, generative_batch, tokenize_generative
from .generation import right_pad
from .prompts import encode_prompt
from .splice import labels_for
from .stages import SentimentInputs, per_sequence_loss
from .tuned_parts import ContrastiveParts, GenerativeParts, SentimentParts

CHUNK = 64  # examples per no-grad batch when caching features or validating
ORTHOGONALITY_WEIGHT = 0.1  # AdaLoRA's regulariser weight


def macro_f1(truth: torch.Tensor, predicted: torch.Tensor, n_classes: int) -> float:
    return float(f1_score(truth.cpu(), predicted.cpu(), labels=list(range(n_classes)), average="macro", zero_division=0))


@torch.no_grad()
def vision_features(pipeline, images: Sequence) -> tuple[torch.Tensor, torch.Tensor]:
    """Frozen vision tower outputs: pooled grid tokens (N, G, C) and CLIP image embeddings (N, E)."""
    model, tokens, pooled = pipeline.model, [], []
    for start in range(0, len(images), CHUNK):
        pixels = pipeline.pixels(images[start : start + CHUNK]).to(model.device, model.projector_dtype)
        grid, summary = model.vision(pixels)
        tokens.append(grid)
        pooled.append(summary)
    return torch.cat(tokens), torch.cat(pooled)


def sentiment_prompts(model, texts: Sequence[str]) -> list[list[int]]:
    return [encode_prompt(model.tokenizer, "sentiment", model.n_image_tokens, text=t.strip()) for t in texts]


def position_limit(model) -> int:
    return getattr(model.lm.config, "max_position_embeddings", None) or 10**9


def sentiment_batch(model, inputs: SentimentInputs, picks) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rows `picks` of a split → input_ids, attention_mask (B, T) and image embeddings (B, K, D) on the model's device."""
    ids, mask = right_pad([inputs.prompts[int(i)] for i in picks], model.tokenizer.pad_token_id)
    return ids.to(model.device), mask.to(model.device), inputs.image_embeds[torch.as_tensor(picks, device=model.device)]


class SentimentTuning:
    """Method "head": cross-entropy of the tuned head, validated by macro-F1."""

    def __init__(self, pipeline, parts: SentimentParts, splits: dict, targets: dict[str, torch.Tensor], batch_size: int,
                 generator: torch.Generator):
        self.model, self.parts, self.targets = pipeline.model, parts, targets
        self.batch_size, self.generator = batch_size, generator
        self.inputs: dict[str, SentimentInputs] = {}
        for name, examples in splits.items():
            with torch.no_grad():  # the base projector: the head reads what base inference feeds it
                embeds = self.model.projector(*vision_features(pipeline, [e.image for e in examples]))
            self.inputs[name] = SentimentInputs(embeds, sentiment_prompts(self.model, [e.text for e in examples]))

    def loss(self, step: int) -> torch.Tensor:
        picks = torch.randint(0, len(self.inputs["train"].prompts), (self.batch_size,), generator=self.generator)
        logits = self.parts.logits(self.model, *sentiment_batch(self.model, self.inputs["train"], picks))
        return F.cross_entropy(logits, self.targets["train"][picks].to(logits.device))

    @torch.no_grad()
    def validate(self) -> float:
        inputs, n = self.inputs["validation"], len(self.inputs["validation"].prompts)
        logits = torch.cat([self.parts.logits(self.model, *sentiment_batch(self.model, inputs, range(s, min(n, s + CHUNK))))
                            for s in range(0, n, CHUNK)])
        return macro_f1(self.targets["validation"], logits.argmax(1), logits.shape[1])


class ContrastiveTuning:
    """Method "contrastive": CLIP's image→text cross-entropy over the tenant's label set, validated by macro-F1."""

    def __init__(self, pipeline, parts: ContrastiveParts, splits: dict, targets: dict[str, torch.Tensor],
                 labels: tuple[str, ...], batch_size: int, generator: torch.Generator):
        model = pipeline.model
        self.parts, self.targets, self.batch_size, self.generator = parts, targets, batch_size, generator
        self.logit_scale = model.clip.logit_scale.detach()
        self.images = {name: vision_features(pipeline, [e.image for e in examples])[1] for name, examples in splits.items()}
        with torch.no_grad():
            self.texts = model.clip.encode_text(pipeline.text_tokenizer(list(labels)).to(model.device))  # (L, E)

    def loss(self, step: int) -> torch.Tensor:
        picks = torch.randint(0, len(self.images["train"]), (self.batch_size,), generator=self.generator)
        logits = self.parts.similarity(self.images["train"][picks.to(self.texts.device)], self.texts, self.logit_scale)
        return F.cross_entropy(logits, self.targets["train"][picks].to(logits.device))

    @torch.no_grad()
    def validate(self) -> float:
        logits = self.parts.similarity(self.images["validation"], self.texts, self.logit_scale)
        return macro_f1(self.targets["validation"], logits.argmax(1), logits.shape[1])


class GenerativeTuning:
    """Methods "lora" / "adalora": next-token loss of the targets, validated by minus the validation loss."""

    def __init__(self, pipeline, parts: GenerativeParts, splits: dict, task: str, batch_size: int,
                 generator: torch.Generator):
        self.model, self.parts, self.batch_size, self.generator = pipeline.model, parts, batch_size, generator
        self.features = {name: vision_features(pipeline, [e.image for e in examples]) for name, examples in splits.items()}
        self.examples = {name: tokenized(self.model, task, examples) for name, examples in splits.items()}

    def batch_loss(self, split: str, picks) -> torch.Tensor:
        model, tokens, pooled = self.model, *self.features[split]
        ids, mask, prompt_lengths, rows = generative_batch([self.examples[split][int(i)] for i in picks],
                                                           model.tokenizer.pad_token_id)
        rows = torch.as_tensor(rows, device=tokens.device)
        image_embeds = self.parts.image_embeddings(model, tokens[rows], pooled[rows])
        labels = labels_for(ids, prompt_lengths, mask).to(model.device)
        with self.parts.lora.active():
            logits = model(ids.to(model.device), mask.to(model.device), image_embeds).logits
        return per_sequence_loss(logits, labels)

    def loss(self, step: int) -> torch.Tensor:
        picks = torch.randint(0, len(self.examples["train"]), (self.batch_size,), generator=self.generator)
        return self.batch_loss("train", picks) + ORTHOGONALITY_WEIGHT * self.parts.lora.orthogonality_penalty()

    @torch.no_grad()
    def validate(self) -> float:
        n = len(self.examples["validation"])
        losses = [self.batch_loss("validation", range(s, min(n, s + CHUNK))) * min(CHUNK, n - s) for s in range(0, n, CHUNK)]
        return -float(sum(losses) / n)


def tokenized(model, task: str, examples) -> list[TokenizedExample]:
    """Prompt + target token ids per example; a long target is cut to the LM's positions (its first token kept)."""
    limit, rows = position_limit(model), []
    for index, example in enumerate(examples):
        fields = {"question": example.text.strip()} if task == "vqa" else {}
        row = tokenize_generative(model.tokenizer, model.n_image_tokens, index, task, example.target, **fields)
        row.target = row.target[: max(1, limit - len(row.prompt))]
        rows.append(row)
    return rows
