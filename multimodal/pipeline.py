"""load_pipeline and the batched inference API: caption, answer, sentiment, classify."""
from __future__ import annotations

from collections.abc import Sequence

import open_clip
import torch
from PIL import Image

from .checkpoint import checkpoint_version, load_model
from .generation import greedy_generate
from .model import VisionLanguageModel
from .preprocess import images_to_batch
from .prompts import encode_prompt
from .vision import image_size


def pick_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def clip_tokenizer(model: VisionLanguageModel):
    vision = model.cfg.vision
    if vision.arch is not None:
        return open_clip.get_tokenizer(vision.arch)
    return open_clip.SimpleTokenizer(context_length=vision.open_clip_config["text_cfg"].get("context_length", 77))


def quantize_int8(model: VisionLanguageModel) -> VisionLanguageModel:
    """Dynamic int8 quantization of every nn.Linear (weights int8, activations quantized on the fly)."""
    from torch.ao.quantization import quantize_dynamic

    return quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)


class Pipeline:
    """Batched, deterministic inference over one loaded model. Inputs are lists of equal length."""

    def __init__(self, model: VisionLanguageModel, model_version: str):
        self.model = model
        self.model_version = model_version
        self.image_size = image_size(model.clip)
        self.text_tokenizer = clip_tokenizer(model)

    def pixels(self, images: Sequence[Image.Image]) -> torch.Tensor:
        vision = self.model.cfg.vision
        return images_to_batch(images, self.image_size, vision.mean, vision.std)

    def _generate(self, images, task: str, fields: list[dict[str, str]]) -> list[str]:
        return self.generate_from_pixels(self.pixels(images), task, fields) if len(images) else []

    @torch.inference_mode()
    def generate_from_pixels(self, pixels: torch.Tensor, task: str, fields: list[dict[str, str]]) -> list[str]:
        """Greedy answers for preprocessed pixels (B, 3, S, S), one prompt per row."""
        tokenizer = self.model.tokenizer
        image_embeds = self.model.encode_images(pixels)
        prompts = [encode_prompt(tokenizer, task, self.model.n_image_tokens, **f) for f in fields]
        outputs = greedy_generate(self.model, prompts, image_embeds, self.model.cfg.max_new_tokens)
        return [tokenizer.decode(ids, skip_special_tokens=True).strip() for ids in outputs]

    def caption(self, images: Sequence[Image.Image]) -> list[str]:
        return self._generate(images, "caption", [{} for _ in images])

    def answer(self, images: Sequence[Image.Image], questions: Sequence[str]) -> list[str]:
        _same_length(images, questions, "questions")
        return self._generate(images, "vqa", [{"question": q.strip()} for q in questions])

    @torch.inference_mode()
    def sentiment(self, images: Sequence[Image.Image], texts: Sequence[str]) -> list[dict]:
        _same_length(images, texts, "texts")
        if not images:
            return []
        logits = self.model.sentiment_head(self.model.sentiment_features_for(self.pixels(images), list(texts)))
        probabilities = logits.float().softmax(-1).cpu()
        labels = self.model.cfg.heads.sentiment_labels
        return [
            {"label": labels[int(row.argmax())], "probabilities": {lab: round(float(p), 6) for lab, p in zip(labels, row)}}
            for row in probabilities
        ]

    @torch.inference_mode()
    def classify(self, images: Sequence[Image.Image], labels: Sequence[Sequence[str]]) -> list[dict]:
        _same_length(images, labels, "labels")
        if not images:
            return []
        distinct = sorted({label for row in labels for label in row})
        index = {label: i for i, label in enumerate(distinct)}
        logits = self.model.clip_similarity(self.pixels(images), self.text_tokenizer(distinct)).cpu()  # (B, L)
        results = []
        for row_logits, row_labels in zip(logits, labels):
            probs = row_logits[[index[label] for label in row_labels]].softmax(-1)
            scores = {label: round(float(p), 6) for label, p in zip(row_labels, probs)}
            results.append({"label": max(scores, key=scores.get), "scores": scores})
        return results


def _same_length(images, other, name: str) -> None:
    if len(images) != len(other):
        raise ValueError(f"got {len(images)} images but {len(other)} {name}")


def load_pipeline(name_or_path: str = "lensq-tiny", device: str = "auto", quantize: str | None = None) -> Pipeline:
    """A shipped checkpoint name (multimodal/checkpoints/) or a checkpoint folder → a ready Pipeline.

    CUDA runs in bf16; CPU in float32, or int8 dynamic quantization with quantize="int8".
    """
    target = pick_device(device)
    model = load_model(name_or_path)
    version = checkpoint_version(name_or_path)
    if quantize not in (None, "int8"):
        raise ValueError(f"quantize must be None or 'int8', got {quantize!r}")
    if quantize == "int8":
        if target.type != "cpu":
            raise ValueError("int8 dynamic quantization runs on CPU only")
        model = quantize_int8(model)
        version += "+int8"
    elif target.type == "cuda":
        model = model.to(target, torch.bfloat16)
    return Pipeline(model.eval(), version)
