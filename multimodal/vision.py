"""The open_clip side: build a CLIP model (vision + text towers) and read vision tokens from it."""
from __future__ import annotations

import os

import open_clip
import torch
import torch.nn.functional as F
from torch import nn

from .config import VisionCfg


def build_clip(cfg: VisionCfg) -> open_clip.CLIP:
    """An open_clip CLIP whose vision tower returns its patch tokens (output_tokens=True)."""
    if cfg.open_clip_config is not None:
        model_cfg = dict(cfg.open_clip_config)
        model_cfg["vision_cfg"] = {**model_cfg["vision_cfg"], "output_tokens": True}
        clip = open_clip.CLIP(**model_cfg)
        if cfg.pretrained:
            clip.load_state_dict(torch.load(cfg.pretrained, map_location="cpu", weights_only=True))
    elif cfg.arch is not None:
        if cfg.pretrained and not os.path.isfile(cfg.pretrained):
            raise FileNotFoundError(f"open_clip pretrained file not found: {cfg.pretrained} (hub tags are not fetched)")
        clip = open_clip.create_model(cfg.arch, pretrained=cfg.pretrained or None, load_weights=True)
    else:
        raise ValueError("vision config needs either 'arch' or 'open_clip_config'")
    if not hasattr(clip.visual, "output_tokens"):
        raise ValueError("the vision tower must be an open_clip VisionTransformer (it exposes patch tokens)")
    clip.visual.output_tokens = True
    return clip


def vision_width(clip: open_clip.CLIP) -> int:
    return clip.visual.ln_post.normalized_shape[0]


def clip_embed_dim(clip: open_clip.CLIP) -> int:
    """Width of the CLIP image embedding (the pooled token after the tower's projection)."""
    proj = clip.visual.proj
    return proj.shape[1] if proj is not None else vision_width(clip)


def image_size(clip: open_clip.CLIP) -> int:
    size = clip.visual.image_size
    return size[0] if isinstance(size, (tuple, list)) else int(size)


def pool_token_grid(tokens: torch.Tensor, grid: int) -> torch.Tensor:
    """Average-pool a square grid of patch tokens (B, N, C) to (B, grid*grid, C)."""
    batch, n_tokens, width = tokens.shape
    side = int(round(n_tokens**0.5))
    if side * side != n_tokens:
        raise ValueError(f"vision tokens do not form a square grid: {n_tokens}")
    if grid >= side:
        return tokens
    maps = tokens.transpose(1, 2).reshape(batch, width, side, side)  # (B, C, S, S)
    pooled = F.adaptive_avg_pool2d(maps, grid)  # (B, C, g, g)
    return pooled.flatten(2).transpose(1, 2)  # (B, g*g, C)


class VisionTokens(nn.Module):
    """Image (B, 3, H, W) → pooled vision tokens (B, grid*grid, C) and the CLIP image embedding (B, E)."""

    def __init__(self, clip: open_clip.CLIP, grid: int):
        super().__init__()
        self.visual = clip.visual
        self.grid = grid

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pooled, tokens = self.visual(pixels)
        return pool_token_grid(tokens, self.grid), pooled
