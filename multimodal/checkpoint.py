"""Checkpoint folders: build a fresh model from a config, save it, load it back (bit-exactly)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file, save_file

from .config import CHECKPOINT_DIR, ModelCfg
from .language import build_scratch_lm, build_word_tokenizer, lm_folder, load_base_lm, load_lm_folder, load_tokenizer
from .model import VisionLanguageModel
from .vision import build_clip

PARTS = ("vision_tower", "text_tower", "projector", "heads")


def build_model(cfg: ModelCfg, vocabulary: list[str] | None = None) -> VisionLanguageModel:
    """A fresh model: random (or open_clip-pretrained) towers, a new or pretrained LM, LoRA if configured."""
    clip = build_clip(cfg.vision)
    if cfg.lm.source == "scratch":
        if vocabulary is None:
            raise ValueError("an LM trained from scratch needs a vocabulary for its word-level tokenizer")
        tokenizer = build_word_tokenizer(vocabulary)
        lm = build_scratch_lm(cfg.lm, len(tokenizer), tokenizer)
    else:
        tokenizer = load_tokenizer(lm_folder(cfg.lm))
        lm = load_base_lm(cfg.lm)
    if cfg.lm.finetune == "lora":
        lm = attach_lora(lm, cfg)
    return VisionLanguageModel(cfg, clip, lm, tokenizer)


def attach_lora(lm, cfg: ModelCfg) -> PeftModel:
    lora = cfg.lm.lora
    config = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                        target_modules=list(lora.target_modules), task_type="CAUSAL_LM")
    return get_peft_model(lm, config)


def part_state(model: VisionLanguageModel, part: str) -> dict[str, torch.Tensor]:
    if part == "vision_tower":
        return model.clip.visual.state_dict()
    if part == "text_tower":
        return {k: v for k, v in model.clip.state_dict().items() if not k.startswith("visual.")}
    if part == "projector":
        return model.projector.state_dict()
    return model.sentiment_head.state_dict()


def load_part(model: VisionLanguageModel, part: str, state: dict[str, torch.Tensor]) -> None:
    if part == "vision_tower":
        model.clip.visual.load_state_dict(state)
    elif part == "text_tower":
        missing, unexpected = model.clip.load_state_dict(state, strict=False)
        if unexpected or any(not k.startswith("visual.") for k in missing):
            raise ValueError(f"text tower weights do not match: missing={missing} unexpected={unexpected}")
    elif part == "projector":
        model.projector.load_state_dict(state)
    else:
        model.sentiment_head.load_state_dict(state)


def save_pretrained(model: VisionLanguageModel, folder: str | Path, eval_report: dict | None = None) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.cfg.save(folder / "config.json")
    for part in PARTS:
        state = {k: v.detach().to("cpu").contiguous() for k, v in part_state(model, part).items()}
        save_file(state, folder / f"{part}.safetensors")
    if isinstance(model.lm, PeftModel):
        model.lm.save_pretrained(folder / "adapter")
        _name_base_lm_portably(folder / "adapter" / "adapter_config.json", model.cfg.lm.path)
        (folder / "adapter" / "README.md").unlink(missing_ok=True)  # peft's blank model-card template
    else:
        model.lm.save_pretrained(folder / "lm")
    model.tokenizer.save_pretrained(folder / "tokenizer")
    if eval_report is not None:
        (folder / "eval.json").write_text(json.dumps(eval_report, indent=2) + "\n")
    return folder


def _name_base_lm_portably(adapter_config: Path, lm_path: str | None) -> None:
    """peft records the local folder the base LM was read from; record the config's portable name instead."""
    config = json.loads(adapter_config.read_text())
    config["base_model_name_or_path"] = lm_path
    adapter_config.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def resolve_checkpoint(name_or_path: str | Path) -> Path:
    path = Path(name_or_path).expanduser()
    if (path / "config.json").exists():
        return path
    shipped = CHECKPOINT_DIR / str(name_or_path)
    if (shipped / "config.json").exists():
        return shipped
    known = sorted(p.name for p in CHECKPOINT_DIR.iterdir() if (p / "config.json").exists()) if CHECKPOINT_DIR.exists() else []
    raise FileNotFoundError(f"no LensQ checkpoint at {name_or_path!r}; shipped: {', '.join(known) or 'none'}")


def load_model(name_or_path: str | Path, merge_lora: bool = True) -> VisionLanguageModel:
    """Load a checkpoint folder on CPU in float32. merge_lora folds the adapter into the LM (inference)."""
    folder = resolve_checkpoint(name_or_path)
    cfg = ModelCfg.from_json(folder / "config.json")
    clip = build_clip(_without_pretrained(cfg).vision)
    tokenizer = load_tokenizer(folder / "tokenizer")
    if (folder / "adapter").exists():
        lm = PeftModel.from_pretrained(load_base_lm(cfg.lm), folder / "adapter", is_trainable=not merge_lora)
        lm = lm.merge_and_unload() if merge_lora else lm
    else:
        lm = load_lm_folder(folder / "lm")
    model = VisionLanguageModel(cfg, clip, lm, tokenizer)
    for part in PARTS:
        load_part(model, part, load_file(folder / f"{part}.safetensors"))
    return model.eval()


def _without_pretrained(cfg: ModelCfg) -> ModelCfg:
    """The saved tower weights replace any open_clip pretrained file, so don't read it again."""
    clone = ModelCfg.from_dict(cfg.to_dict())
    clone.vision.pretrained = None
    return clone


def checkpoint_version(name_or_path: str | Path) -> str:
    """'<name>@<8 hex>': a digest of the checkpoint's weight files, so results name what made them."""
    folder = resolve_checkpoint(name_or_path)
    digest = hashlib.sha256()
    # reports describe the weights, and tokenizer_config.json gains loader bookkeeping on each save:
    # neither changes what the model computes (tokenizer.json holds the vocabulary and is hashed)
    reports = {"eval.json", "train_report.json", "tokenizer_config.json"}
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in (".safetensors", ".json") and p.name not in reports)
    for path in files:
        digest.update(path.relative_to(folder).as_posix().encode())
        digest.update(path.read_bytes())
    return f"{ModelCfg.from_json(folder / 'config.json').name}@{digest.hexdigest()[:8]}"
