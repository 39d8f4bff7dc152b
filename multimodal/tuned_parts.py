"""The small modules a fine-tune trains, one kind per method, and how to rebuild them from a stored config."""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from .lora_overlay import LoraOverlay
from .model import SentimentHead, VisionLanguageModel
from .vision import clip_embed_dim

METHODS = ("head", "contrastive", "lora", "adalora")


class SentimentParts(nn.Module):
    """Method "head": a copy of the base sentiment head with its token adapter, read through the frozen LM."""

    def __init__(self, head: SentimentHead):
        super().__init__()
        self.head = head

    def logits(self, model: VisionLanguageModel, input_ids, attention_mask, image_embeds) -> torch.Tensor:
        """Prompt ids and masks (B, T), image embeddings (B, K, D) → class logits (B, C)."""
        return self.head(model.sentiment_features(input_ids, attention_mask, image_embeds, self.head))


class ContrastiveParts(nn.Module):
    """Method "contrastive": residual linear adapters on CLIP's image and text embeddings, starting as identity."""

    def __init__(self, embed_dim: int):
        super().__init__()
        self.image = nn.Linear(embed_dim, embed_dim)
        self.text = nn.Linear(embed_dim, embed_dim)
        for layer in (self.image, self.text):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def similarity(self, image: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
        """CLIP embeddings of images (B, E) and label texts (L, E) → scaled cosine similarities (B, L)."""
        image, text = image.float(), text.float()
        image = F.normalize(image + self.image(image), dim=-1)
        text = F.normalize(text + self.text(text), dim=-1)
        return logit_scale.exp().float() * image @ text.T


class GenerativeParts(nn.Module):
    """Methods "lora" / "adalora": a copy of the projector and a LoRA overlay on the LM's attention layers."""

    def __init__(self, projector: nn.Module, lora: LoraOverlay):
        super().__init__()
        self.projector = projector
        self.lora = lora

    def image_embeddings(self, model: VisionLanguageModel, tokens: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
        """Vision tokens (B, G, C) and CLIP embeddings (B, E) → LM-space embeddings (B, K, D) in the LM's dtype."""
        return self.projector(tokens.float(), pooled.float()).to(model.projector_dtype)


def new_parts(model: VisionLanguageModel, method: str, lora_r: int, seed: int) -> nn.Module:
    """Fresh trainable parts for `method`, starting from the base model's behaviour."""
    if method == "head":
        parts = SentimentParts(copy.deepcopy(model.sentiment_head))
    elif method == "contrastive":
        parts = ContrastiveParts(clip_embed_dim(model.clip))
    elif method in ("lora", "adalora"):
        lora_cfg = model.cfg.lm.lora
        overlay = LoraOverlay.for_lm(model.lm, tuple(lora_cfg.target_modules), lora_r, 2.0 * lora_r,
                                     svd=method == "adalora", generator=torch.Generator().manual_seed(seed))
        parts = GenerativeParts(copy.deepcopy(model.projector), overlay)
    else:
        raise ValueError(f"unknown fine-tuning method {method!r}; expected one of {METHODS}")
    return _ready(model, parts)


def parts_config(model: VisionLanguageModel, method: str, parts: nn.Module) -> dict:
    """What rebuild_parts needs besides the weights."""
    if isinstance(parts, GenerativeParts):
        lora = parts.lora
        return {"lora": {"r": lora.r, "alpha": lora.alpha, "svd": lora.svd, "layers": sorted(lora.names)}}
    if isinstance(parts, ContrastiveParts):
        return {"embed_dim": parts.image.in_features}
    return {}


def rebuild_parts(model: VisionLanguageModel, method: str, config: dict, state: dict[str, torch.Tensor]) -> nn.Module:
    """Parts of `method` with the stored weights, over `model`."""
    if method == "head":
        parts = SentimentParts(copy.deepcopy(model.sentiment_head))
    elif method == "contrastive":
        parts = ContrastiveParts(int(config["embed_dim"]))
    elif method in ("lora", "adalora"):
        lora = config["lora"]
        layers = dict(target_items(model, lora["layers"]))
        overlay = LoraOverlay({n: (m.in_features, m.out_features) for n, m in layers.items()}, int(lora["r"]),
                              float(lora["alpha"]), svd=bool(lora["svd"]))
        parts = GenerativeParts(copy.deepcopy(model.projector), overlay)
    else:
        raise ValueError(f"unknown fine-tuning method {method!r}; expected one of {METHODS}")
    parts.load_state_dict(state)
    return _ready(model, parts).eval().requires_grad_(False)


def target_items(model: VisionLanguageModel, names: list[str]):
    modules = dict(model.lm.named_modules())
    missing = [n for n in names if n not in modules]
    if missing:
        raise ValueError(f"the base LM has no layers {missing[:3]}: the version was tuned on another base model")
    return [(n, modules[n]) for n in names]


def _ready(model: VisionLanguageModel, parts: nn.Module) -> nn.Module:
    """Float32 on the model's device: the base may run in bf16, but small trained parts keep full precision."""
    parts = parts.to(model.device, torch.float32)
    if isinstance(parts, GenerativeParts):
        parts.lora.attach(model.lm)
    return parts
