"""One training loop for every stage: AdamW + warmup/cosine, validation every K steps, early stopping, resume."""
from __future__ import annotations

import contextlib
import copy
import math
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm


@dataclass
class LoopCfg:
    steps: int = 1000
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup: int = 100
    eval_every: int = 100
    patience: int = 5  # validations without improvement before stopping early
    grad_clip: float = 1.0
    seed: int = 0


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def warmup_cosine(warmup: int, total: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


def param_groups(module: torch.nn.Module, lr: float, weight_decay: float, lr_scale: dict[str, float] | None = None) -> list[dict]:
    """Weight decay on matrices only (biases and norms undecayed); lr_scale maps a name prefix to an LR factor."""
    groups: dict[tuple[float, float], list] = {}
    for name, param in module.named_parameters():
        if not param.requires_grad:
            continue
        scale = next((f for prefix, f in (lr_scale or {}).items() if name.startswith(prefix)), 1.0)
        groups.setdefault((scale, weight_decay if param.ndim >= 2 else 0.0), []).append(param)
    return [{"params": params, "lr": lr * scale, "weight_decay": decay} for (scale, decay), params in groups.items()]


@dataclass
class LoopHooks:
    """What a caller that keeps its checkpoints in memory (a fine-tuning service) plugs into run_loop."""

    resume: dict | None = None  # a snapshot from on_checkpoint: the run continues from its step
    on_checkpoint: Callable[[dict], None] | None = None  # gets a self-contained snapshot every checkpoint_every steps
    checkpoint_every: int = 0
    on_step: Callable[[dict], None] | None = None  # after every step: step, loss, validation (or None), best
    should_stop: Callable[[], bool] | None = None  # checked before every step; True ends the run, "stopped" set
    generator: torch.Generator | None = None  # the batch sampler's RNG, so a resumed run draws the same batches


def module_device(module: torch.nn.Module) -> torch.device:
    return next(module.parameters()).device


def mixed_precision(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA: matmuls run in bf16 while weights, gradients and optimizer state stay float32.
    On CPU training stays in float32, as the shipped checkpoints were trained."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def trainable_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    names = {n for n, p in module.named_parameters() if p.requires_grad}
    return {k: v.detach().clone() for k, v in module.state_dict().items() if k in names}


def run_loop(
    module: torch.nn.Module,
    loss_fn: Callable[[int], torch.Tensor],
    validate: Callable[[], float],
    cfg: LoopCfg,
    resume_path: Path | None = None,
    desc: str = "train",
    lr_scale: dict[str, float] | None = None,
    hooks: LoopHooks | None = None,
) -> dict:
    """Train the parameters of `module` that require grad; keep (and restore) the best validated state.

    loss_fn(step) returns the loss of one batch; validate() returns a metric where higher is better.
    hooks: in-memory resume and checkpoints, per-step progress, cancellation (see LoopHooks).
    """
    hooks = hooks or LoopHooks()
    precision = mixed_precision(module_device(module))
    optimizer = torch.optim.AdamW(param_groups(module, cfg.lr, cfg.weight_decay, lr_scale), lr=cfg.lr, betas=(0.9, 0.98))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(cfg.warmup, cfg.steps))
    state = {"step": 0, "best_metric": -math.inf, "best_step": 0, "bad_evals": 0, "history": []}
    best = trainable_state(module)
    if resume_path is not None and resume_path.exists():
        saved = torch.load(resume_path, map_location="cpu", weights_only=False)
        state, best = _restore(saved, module, optimizer, scheduler, hooks.generator)
    elif hooks.resume is not None:
        state, best = _restore(hooks.resume, module, optimizer, scheduler, hooks.generator)
    module.train()
    bar = tqdm(range(state["step"], cfg.steps), desc=desc, initial=state["step"], total=cfg.steps, mininterval=5)
    running = state.get("running_loss")
    for step in bar:
        if hooks.should_stop is not None and hooks.should_stop():
            state["stopped"] = True
            break
        with precision:
            loss = loss_fn(step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in module.parameters() if p.requires_grad], cfg.grad_clip)
        optimizer.step()
        scheduler.step()
        running = loss.item() if running is None else 0.95 * running + 0.05 * loss.item()
        if step % 25 == 0:
            bar.set_postfix(loss=f"{running:.4f}", best=f"{state['best_metric']:.4f}", refresh=False)
        state["step"], state["running_loss"] = step + 1, running
        validated = state["step"] % cfg.eval_every == 0 or state["step"] == cfg.steps
        if validated:
            with precision:
                improved = _validate_and_track(module, validate, state, running, best_holder := [best])
            if improved:
                best = best_holder[0]
            if resume_path is not None:
                _save_resume(resume_path, module, optimizer, scheduler, state, best, hooks.generator)
        _report_step(hooks, state, loss.item(), validated,
                     lambda: _snapshot(module, optimizer, scheduler, state, best, hooks.generator))
        if validated and state["bad_evals"] >= cfg.patience:
            tqdm.write(f"{desc}: early stop at step {state['step']} (best {state['best_metric']:.4f} at {state['best_step']})")
            break
    module.load_state_dict(best, strict=False)
    module.eval()
    return {**state, "cfg": asdict(cfg)}


def _validate_and_track(module, validate, state: dict, running_loss, best_holder: list) -> bool:
    module.eval()
    metric = float(validate())
    module.train()
    state["history"].append({"step": state["step"], "train_loss": running_loss, "val_metric": metric})
    tqdm.write(f"step {state['step']}: train loss {running_loss:.4f}, validation {metric:.4f}")
    if metric > state["best_metric"]:
        state.update(best_metric=metric, best_step=state["step"], bad_evals=0)
        best_holder[0] = trainable_state(module)
        return True
    state["bad_evals"] += 1
    return False


def _report_step(hooks: LoopHooks, state: dict, loss: float, validated: bool, snapshot: Callable[[], dict]) -> None:
    if hooks.on_step is not None:
        validation = state["history"][-1]["val_metric"] if validated else None
        hooks.on_step({"step": state["step"], "loss": loss, "validation": validation,
                       "best_metric": state["best_metric"] if state["history"] else None,
                       "best_step": state["best_step"] if state["history"] else None})
    if hooks.on_checkpoint is not None and hooks.checkpoint_every > 0 and state["step"] % hooks.checkpoint_every == 0:
        hooks.on_checkpoint(snapshot())


def _snapshot(module, optimizer, scheduler, state, best, generator: torch.Generator | None) -> dict:
    """Everything a resumed run needs to continue exactly: weights, optimizer, schedule, counters, RNGs."""
    # deep copies: the optimizer's moments change in place at the next step, and a caller may keep the snapshot
    return {"current": trainable_state(module), "optimizer": copy.deepcopy(optimizer.state_dict()),
            "scheduler": scheduler.state_dict(), "state": copy.deepcopy(state), "best": best, "torch_rng": torch.get_rng_state(),
            "generator": generator.get_state() if generator is not None else None}


def _restore(saved: dict, module, optimizer, scheduler, generator: torch.Generator | None) -> tuple[dict, dict]:
    module.load_state_dict(saved["current"], strict=False)
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    torch.set_rng_state(saved["torch_rng"])
    if generator is not None and saved.get("generator") is not None:
        generator.set_state(saved["generator"])
    return copy.deepcopy(saved["state"]), saved["best"]


def _save_resume(path: Path, module, optimizer, scheduler, state, best, generator=None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(_snapshot(module, optimizer, scheduler, state, best, generator), tmp)
    tmp.replace(path)
