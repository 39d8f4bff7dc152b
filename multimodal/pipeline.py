"""load_pipeline and the batched inference API: caption, answer, sentiment, classify."""
from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable, Sequence

import open_clip
import torch
from PIL import Image

from .checkpoint import checkpoint_version, load_model
from .generation import greedy_generate, right_pad
from .model import VisionLanguageModel
from .preprocess import DEFAULT_MAX_PIXELS, decode_image, fit_to_model, images_to_batch
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


class EmbeddingCache:
    """A bounded LRU of image embeddings (K, D), keyed by (model version, image key such as a sha256).

    Thread-safe: a worker encodes the next batch's images on another thread while the model's thread reads
    the current batch's (an unlocked read could find its key evicted between the lookup and the reordering)."""

    def __init__(self, max_entries: int):
        self.max_entries = max_entries
        self.entries: OrderedDict[tuple[str, Hashable], torch.Tensor] = OrderedDict()
        self.hits = self.misses = 0
        self._lock = threading.Lock()

    def get(self, key: tuple[str, Hashable]) -> torch.Tensor | None:
        with self._lock:
            found = self.entries.get(key)
            if found is not None:
                self.entries.move_to_end(key)
            return found

    def put(self, key: tuple[str, Hashable], embeds: torch.Tensor) -> None:
        if self.max_entries <= 0:
            return
        copy = embeds.clone()  # a copy, so the cached row does not keep the whole batch's tensor alive
        with self._lock:
            self.entries[key] = copy
            self.entries.move_to_end(key)
            while len(self.entries) > self.max_entries:
                self.entries.popitem(last=False)

    def count(self, hits: int, misses: int) -> None:
        with self._lock:
            self.hits += hits
            self.misses += misses


class Pipeline:
    """Batched, deterministic inference over one loaded model. Inputs are lists of equal length.

    Callers that know a stable key per image (its sha256) pass `image_keys`: each distinct image is then
    encoded once per batch, and an image seen recently is not encoded again (EmbeddingCache)."""

    def __init__(self, model: VisionLanguageModel, model_version: str, embedding_cache_size: int = 256):
        self.model = model
        self.model_version = model_version
        self.image_size = image_size(model.clip)
        self.text_tokenizer = clip_tokenizer(model)
        self.embedding_cache = EmbeddingCache(embedding_cache_size)

    def prepare(self, data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
        """Image bytes → the (S, S) RGB square the model reads; JPEGs decode at a reduced scale (thread-safe)."""
        return fit_to_model(decode_image(data, max_pixels, target_size=self.image_size), self.image_size)

    def pixels(self, images: Sequence[Image.Image]) -> torch.Tensor:
        vision = self.model.cfg.vision
        return images_to_batch(images, self.image_size, vision.mean, vision.std)

    @torch.inference_mode()
    def image_embeddings(self, images: Sequence[Image.Image],
                         image_keys: Sequence[Hashable] | None = None) -> torch.Tensor:
        """Images → LM-space embeddings (B, K, D); with keys, each distinct uncached image is encoded once."""
        if image_keys is None:
            return self.model.encode_images(self.pixels(images))
        check_same_length(images, image_keys, "image_keys")
        found: dict[Hashable, torch.Tensor] = {}
        to_encode: dict[Hashable, Image.Image] = {}
        for image, key in zip(images, image_keys):
            cached = found.get(key)
            if cached is None and key not in to_encode:
                cached = self.embedding_cache.get((self.model_version, key))
            if cached is not None:
                found[key] = cached
            else:
                to_encode.setdefault(key, image)
        self.embedding_cache.count(hits=len(images) - len(to_encode), misses=len(to_encode))
        if to_encode:
            encoded = self.model.encode_images(self.pixels(list(to_encode.values())))  # (U, K, D)
            for key, row in zip(to_encode, encoded):
                found[key] = row
                self.embedding_cache.put((self.model_version, key), row)
        return torch.stack([found[key] for key in image_keys])

    def _generate(self, images, task: str, fields: list[dict[str, str]], image_keys=None) -> list[str]:
        if not len(images):
            return []
        return self.generate_from_embeddings(self.image_embeddings(images, image_keys), task, fields)

    @torch.inference_mode()
    def generate_from_pixels(self, pixels: torch.Tensor, task: str, fields: list[dict[str, str]]) -> list[str]:
        """Greedy answers for preprocessed pixels (B, 3, S, S), one prompt per row."""
        return self.generate_from_embeddings(self.model.encode_images(pixels), task, fields)

    @torch.inference_mode()
    def generate_from_embeddings(self, image_embeds: torch.Tensor, task: str,
                                 fields: list[dict[str, str]]) -> list[str]:
        """Greedy answers for image embeddings (B, K, D), one prompt per row, in one batched generation."""
        tokenizer = self.model.tokenizer
        prompts = [encode_prompt(tokenizer, task, self.model.n_image_tokens, **f) for f in fields]
        outputs = greedy_generate(self.model, prompts, image_embeds, self.model.cfg.max_new_tokens)
        return [tokenizer.decode(ids, skip_special_tokens=True).strip() for ids in outputs]

    def caption(self, images: Sequence[Image.Image], image_keys: Sequence[Hashable] | None = None) -> list[str]:
        return self._generate(images, "caption", [{} for _ in images], image_keys)

    def answer(self, images: Sequence[Image.Image], questions: Sequence[str],
               image_keys: Sequence[Hashable] | None = None) -> list[str]:
        check_same_length(images, questions, "questions")
        return self._generate(images, "vqa", [{"question": q.strip()} for q in questions], image_keys)

    @torch.inference_mode()
    def sentiment(self, images: Sequence[Image.Image], texts: Sequence[str],
                  image_keys: Sequence[Hashable] | None = None) -> list[dict]:
        check_same_length(images, texts, "texts")
        if not images:
            return []
        logits = self.model.sentiment_head(self._sentiment_features(self.image_embeddings(images, image_keys), texts))
        probabilities = logits.float().softmax(-1).cpu()
        labels = self.model.cfg.heads.sentiment_labels
        return [
            {"label": labels[int(row.argmax())], "probabilities": {lab: round(float(p), 6) for lab, p in zip(labels, row)}}
            for row in probabilities
        ]

    def _sentiment_features(self, image_embeds: torch.Tensor, texts: Sequence[str]) -> torch.Tensor:
        """Image embeddings (B, K, D) and their posts → the pooled features the sentiment head reads (B, 2D)."""
        model = self.model
        prompts = [encode_prompt(model.tokenizer, "sentiment", model.n_image_tokens, text=t.strip()) for t in texts]
        input_ids, mask = right_pad(prompts, model.tokenizer.pad_token_id)
        return model.sentiment_features(input_ids.to(model.device), mask.to(model.device), image_embeds)

    @torch.inference_mode()
    def classify(self, images: Sequence[Image.Image], labels: Sequence[Sequence[str]]) -> list[dict]:
        check_same_length(images, labels, "labels")
        if not images:
            return []
        distinct = distinct_labels(labels)
        logits = self.model.clip_similarity(self.pixels(images), self.text_tokenizer(distinct)).cpu()  # (B, L)
        return label_scores(logits, labels, distinct)


def distinct_labels(labels: Sequence[Sequence[str]]) -> list[str]:
    """Every label of a batch once, sorted: the text tower encodes each a single time."""
    return sorted({label for row in labels for label in row})


def label_scores(logits: torch.Tensor, labels: Sequence[Sequence[str]], distinct: list[str]) -> list[dict]:
    """Each image's softmax over its own labels, from logits (B, L) against `distinct` (L)."""
    index = {label: i for i, label in enumerate(distinct)}
    results = []
    for row_logits, row_labels in zip(logits, labels):
        probs = row_logits[[index[label] for label in row_labels]].softmax(-1)
        scores = {label: round(float(p), 6) for label, p in zip(row_labels, probs)}
        results.append({"label": max(scores, key=scores.get), "scores": scores})
    return results


def check_same_length(images, other, name: str) -> None:
    if len(images) != len(other):
        raise ValueError(f"got {len(images)} images but {len(other)} {name}")


def load_pipeline(name_or_path: str = "lensq-tiny", device: str = "auto", quantize: str | None = None,
                  embedding_cache_size: int = 256) -> Pipeline:
    """A shipped checkpoint name (multimodal/checkpoints/) or a checkpoint folder → a ready Pipeline.

    CUDA runs in bf16; CPU in float32, or int8 dynamic quantization with quantize="int8".
    embedding_cache_size: how many image embeddings the pipeline keeps (0: none), see Pipeline.image_embeddings.
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
    return Pipeline(model.eval(), version, embedding_cache_size)
