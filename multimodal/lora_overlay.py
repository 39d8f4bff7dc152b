"""LoRA kept outside the LM: low-rank updates added by forward hooks only while their owner is active.

Several tenants' adapters can then share one base LM: each call activates one set (a context variable, so
threads and nested calls do not see each other's), and with none active the LM computes exactly what it did.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from contextvars import ContextVar

import torch
from torch import nn

_ACTIVE: ContextVar["LoraOverlay | None"] = ContextVar("lensq_active_lora", default=None)
_HOOKED = "_lensq_lora_hooked"  # attribute on the LM: names of the layers that already carry our hook


def target_layers(lm: nn.Module, target_modules: tuple[str, ...]) -> dict[str, nn.Module]:
    """The LM's linear layers whose last name part is one of target_modules, by full name."""
    found = {name: module for name, module in lm.named_modules()
             if name.rsplit(".", 1)[-1] in target_modules and hasattr(module, "in_features")}
    if not found:
        raise ValueError(f"no linear layer of the LM is named one of {list(target_modules)}")
    return found


class LoraOverlay(nn.Module):
    """Low-rank updates (alpha / r) · B · A for named linear layers of one LM; A random, B zero at the start.

    With svd=True the update is AdaLoRA's form (alpha / r) · P · diag(E) · Q with E starting at zero, and
    orthogonality_penalty() keeps P and Q near-orthogonal so that |E| ranks the directions.
    """

    def __init__(self, shapes: dict[str, tuple[int, int]], r: int, alpha: float, svd: bool = False,
                 generator: torch.Generator | None = None):
        super().__init__()
        self.names = {name: name.replace(".", "__") for name in shapes}
        self.r, self.alpha, self.svd = r, alpha, svd
        self.a = nn.ParameterDict()
        self.b = nn.ParameterDict()
        self.e = nn.ParameterDict()
        for name, (in_features, out_features) in shapes.items():
            key = self.names[name]
            a = torch.randn(r, in_features, generator=generator) / math.sqrt(in_features)  # (r, in)
            # near-orthonormal rows of A and columns of B, so the SVD form starts where its regulariser wants it
            b = torch.randn(out_features, r, generator=generator) / math.sqrt(out_features) if svd else torch.zeros(out_features, r)
            self.a[key], self.b[key] = nn.Parameter(a), nn.Parameter(b)  # b: (out, r)
            if svd:
                self.e[key] = nn.Parameter(torch.zeros(r))

    @classmethod
    def for_lm(cls, lm: nn.Module, target_modules: tuple[str, ...], r: int, alpha: float, svd: bool = False,
               generator: torch.Generator | None = None) -> "LoraOverlay":
        layers = target_layers(lm, target_modules)
        return cls({n: (m.in_features, m.out_features) for n, m in layers.items()}, r, alpha, svd, generator)

    def update(self, name: str, x: torch.Tensor) -> torch.Tensor | None:
        """The low-rank update of layer `name` for its input x (..., in) → (..., out), or None."""
        key = self.names.get(name)
        if key is None:
            return None
        a = self.a[key] * self.e[key][:, None] if self.svd else self.a[key]
        return (x.to(a.dtype) @ a.T) @ self.b[key].T * (self.alpha / self.r)

    def orthogonality_penalty(self) -> torch.Tensor:
        """AdaLoRA's regulariser: ‖AAᵀ − I‖² + ‖BᵀB − I‖², summed over layers (0 without svd)."""
        if not self.svd:
            return torch.zeros(())
        eye = torch.eye(self.r, device=next(self.parameters()).device)
        return sum(((self.a[k] @ self.a[k].T - eye) ** 2).sum() + ((self.b[k].T @ self.b[k] - eye) ** 2).sum()
                   for k in self.names.values())

    @torch.no_grad()
    def allocate_ranks(self, keep_fraction: float) -> dict[str, int]:
        """AdaLoRA's rank allocation, done once: keep the largest |E| over all layers, zero the rest → rank per layer.

        (AdaLoRA prunes gradually during training by a smoothed sensitivity score; this keeps its budget idea.)
        """
        if not self.svd:
            return {}
        magnitudes = torch.cat([self.e[key].abs() for key in self.names.values()])
        threshold = magnitudes.topk(max(1, round(keep_fraction * len(magnitudes)))).values.min()
        for key in self.names.values():
            self.e[key].mul_((self.e[key].abs() >= threshold).to(self.e[key].dtype))
        return {name: int((self.e[key] != 0).sum()) for name, key in self.names.items()}

    def attach(self, lm: nn.Module) -> None:
        """Give the LM's target layers the hook that applies the active overlay (once per layer)."""
        hooked: set[str] = getattr(lm, _HOOKED, set())
        for name, module in target_layers(lm, tuple({n.rsplit(".", 1)[-1] for n in self.names})).items():
            if name in self.names and name not in hooked:
                module.register_forward_hook(_make_hook(name))
                hooked.add(name)
        setattr(lm, _HOOKED, hooked)

    @contextmanager
    def active(self):
        """Within this block (this thread or task only), the hooked LM runs with this overlay's updates."""
        token = _ACTIVE.set(self)
        try:
            yield self
        finally:
            _ACTIVE.reset(token)


def _make_hook(name: str):
    def add_active_update(module, inputs, output):
        overlay = _ACTIVE.get()
        if overlay is None:
            return None  # the base LM, untouched
        update = overlay.update(name, inputs[0])
        return None if update is None else output + update.to(output.dtype)

    return add_active_update
