"""The causal LM and its tokenizer: from scratch, a local Hugging Face folder, or a local GGUF file."""
from __future__ import annotations

import hashlib
import importlib.util
import os
import re
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from .config import LMCfg

SPECIAL_TOKENS = {"pad_token": "<pad>", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}


def cache_dir() -> Path:
    return Path(os.environ.get("LENSQ_CACHE_DIR", Path.home() / ".cache" / "lensq"))


def resolve_path(spec: str) -> Path:
    """A local path, or 'package:<module>/<file>' for a file shipped inside an installed wheel."""
    if spec.startswith("package:"):
        module, _, filename = spec[len("package:") :].partition("/")
        found = importlib.util.find_spec(module)
        if found is None or not found.submodule_search_locations:
            raise FileNotFoundError(f"package {module!r} is not installed (needed for {spec})")
        return Path(list(found.submodule_search_locations)[0]) / filename
    return Path(spec).expanduser()


def gguf_as_hf_folder(gguf_file: Path) -> Path:
    """Convert a GGUF file to a plain HF folder once (about 14 s); later loads read the cached folder."""
    stat = gguf_file.stat()
    key = hashlib.sha256(f"{gguf_file.resolve()}:{stat.st_size}:{int(stat.st_mtime)}".encode()).hexdigest()[:16]
    folder = cache_dir() / "gguf" / f"{gguf_file.stem}-{key}"
    if (folder / "config.json").exists():
        return folder
    tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
    loaded = AutoModelForCausalLM.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name)
    # transformers dequantizes GGUF to float32 but marks the model unserializable: copy it into a plain one.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    tmp.rename(folder)  # atomic: a concurrent converter never sees half a folder
    return folder


def lm_folder(cfg: LMCfg) -> Path:
    """The local HF folder holding the base LM weights for an 'hf' or 'gguf' source."""
    if not cfg.path:
        raise ValueError(f"lm.source={cfg.source!r} needs lm.path")
    path = resolve_path(cfg.path)
    if not path.exists():
        raise FileNotFoundError(f"LM weights not found: {path}")
    if cfg.source == "gguf":
        return gguf_as_hf_folder(path)
    return path


def build_scratch_lm(cfg: LMCfg, vocab_size: int, tokenizer: PreTrainedTokenizerFast) -> LlamaForCausalLM:
    config = LlamaConfig(
        vocab_size=vocab_size,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        **(cfg.scratch or {}),
    )
    return LlamaForCausalLM(config)


def load_lm_folder(folder: Path, dtype: torch.dtype = torch.float32):
    return AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)


def load_base_lm(cfg: LMCfg, dtype: torch.dtype = torch.float32):
    return load_lm_folder(lm_folder(cfg), dtype)


def build_word_tokenizer(words: list[str]) -> PreTrainedTokenizerFast:
    """A word-level tokenizer (lower-cased, punctuation split off) over a closed vocabulary."""
    specials = list(SPECIAL_TOKENS.values())
    vocab = {tok: i for i, tok in enumerate(specials + sorted(set(words) - set(specials)))}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=SPECIAL_TOKENS["unk_token"]))
    core.normalizer = normalizers.Lowercase()
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.decoder = decoders.WordPiece(prefix="##", cleanup=True)  # joins words with spaces, tidies " ." → "."
    return PreTrainedTokenizerFast(tokenizer_object=core, **SPECIAL_TOKENS)


def words_of(texts) -> list[str]:
    """The word-level vocabulary (as Whitespace pre-tokenizes) of an iterable of texts."""
    split = re.compile(r"\w+|[^\w\s]+")
    vocab: set[str] = set()
    for text in texts:
        vocab.update(split.findall(text.lower()))
    return sorted(vocab)


def load_tokenizer(folder: Path):
    tokenizer = AutoTokenizer.from_pretrained(folder)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer
