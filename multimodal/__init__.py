"""LensQ's model: an open_clip vision tower fused into a causal LM, usable as a library on its own."""
from .checkpoint import build_model, load_model, save_pretrained
from .config import ModelCfg, get_preset, list_presets
from .model import VisionLanguageModel
from .pipeline import Pipeline, load_pipeline
from .preprocess import ImageError, decode_image

__all__ = [
    "ImageError", "ModelCfg", "Pipeline", "VisionLanguageModel", "build_model", "decode_image",
    "get_preset", "list_presets", "load_model", "load_pipeline", "save_pretrained",
]
