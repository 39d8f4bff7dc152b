"""Projectors from vision width to LM width, chosen by name."""
from __future__ import annotations

import re

from torch import nn


def build_projector(kind: str, in_dim: int, out_dim: int) -> nn.Module:
    """'linear' or 'mlpNx_gelu' (N linear layers with GELU between them)."""
    if kind == "linear":
        return nn.Linear(in_dim, out_dim)
    match = re.fullmatch(r"mlp(\d+)x_gelu", kind)
    if match is None:
        raise ValueError(f"unknown projector type {kind!r}: use 'linear' or 'mlp2x_gelu'")
    layers: list[nn.Module] = [nn.Linear(in_dim, out_dim)]
    for _ in range(int(match.group(1)) - 1):
        layers += [nn.GELU(), nn.Linear(out_dim, out_dim)]
    return nn.Sequential(*layers)
