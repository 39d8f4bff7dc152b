"""Fine-tuning as a library: adapt a loaded pipeline to a tenant's examples, evaluate it, serve the result.

fine_tune trains small parts only (a sentiment head + token adapter, CLIP embedding adapters, or a LoRA
overlay + projector) through the frozen base model, with the project's one training loop (AdamW, warmup,
validation, early stopping, best state kept). Its result, TunedParts, is what a service stores; apply_tuned
serves it over the same base model objects, any number side by side.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from PIL import Image
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from .trainer import LoopCfg, LoopHooks, run_loop
from .tuned_parts import new_parts, parts_config, rebuild_parts
from .tuned_pipeline import TunedPipeline
from .tuning import ContrastiveTuning, GenerativeTuning, SentimentTuning

TUNABLE_TASKS = ("sentiment", "classify", "vqa", "caption")
AUTO_METHOD = {"sentiment": "head", "classify": "contrastive", "vqa": "lora", "caption": "lora"}
TASK_METHODS = {"sentiment": ("head",), "classify": ("contrastive",), "vqa": ("lora", "adalora"),
                "caption": ("lora", "adalora")}
ADALORA_KEEP_FRACTION = 2 / 3  # of the initial ranks, as AdaLoRA's defaults (init_r 12 → target_r 8)
STATE_FORMAT = 1
CONFIG_KIND = "lensq-finetune"


@dataclass(frozen=True)
class TuneExample:
    """One training example: text is the post (sentiment), the question (vqa), "" otherwise; target the answer."""

    image: Image.Image
    text: str
    target: str


@dataclass(frozen=True)
class TuneSettings:
    task: str
    max_steps: int = 200
    batch_size: int = 16
    learning_rate: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int = 10
    eval_every: int = 20
    patience: int = 3
    checkpoint_every: int = 20
    seed: int = 0
    method: str = "auto"
    lora_r: int = 8
    labels: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.task not in TUNABLE_TASKS:
            raise ValueError(f"task: {self.task!r} cannot be fine-tuned; expected one of {TUNABLE_TASKS}")
        if self.method != "auto" and self.method not in TASK_METHODS[self.task]:
            raise ValueError(f"method: {self.method!r} does not tune {self.task}; "
                             f"use 'auto' or one of {TASK_METHODS[self.task]}")
        for name in ("max_steps", "batch_size", "eval_every", "patience", "lora_r"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be at least 1, got {getattr(self, name)}")
        for name in ("warmup_steps", "checkpoint_every", "seed"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: must not be negative, got {getattr(self, name)}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate: must be positive, got {self.learning_rate}")
        if not self.weight_decay >= 0:
            raise ValueError(f"weight_decay: must not be negative, got {self.weight_decay}")
        object.__setattr__(self, "labels", tuple(self.labels))

    @property
    def resolved_method(self) -> str:
        return AUTO_METHOD[self.task] if self.method == "auto" else self.method

    @classmethod
    def from_hyperparameters(cls, task: str, hyperparameters: dict | None) -> "TuneSettings":
        """Settings from an API hyperparameters dict; an unknown key or a wrongly typed value is a ValueError naming it."""
        known = {f.name: f for f in dataclasses.fields(cls) if f.name != "task"}
        values = {}
        for key, value in (hyperparameters or {}).items():
            if key not in known:
                raise ValueError(f"{key}: unknown hyperparameter; known: {', '.join(sorted(known))}")
            values[key] = _typed(key, value, known[key].type)
        return cls(task=task, **values)


def _typed(key: str, value, type_name: str):
    """A JSON value checked against the field's type (bool is not an int here)."""
    if type_name == "int" and isinstance(value, int) and not isinstance(value, bool):
        return value
    if type_name == "float" and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if type_name == "str" and isinstance(value, str):
        return value
    if type_name.startswith("tuple") and isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise ValueError(f"{key}: expected {type_name.replace('tuple[str, ...]', 'a list of strings')}, got {value!r}")


@dataclass
class TuneProgress:
    step: int
    max_steps: int
    loss: float
    validation_metric: float | None
    best_metric: float | None
    best_step: int | None


@dataclass
class TunedParts:
    """A trained version: safetensors bytes of the trained tensors, the config to rebuild them, the training report."""

    task: str
    weights: bytes
    config: dict
    report: dict = field(default_factory=dict)

    @classmethod
    def from_stored(cls, task: str, weights: bytes, config: dict) -> "TunedParts":
        if config.get("kind") != CONFIG_KIND or config.get("task") != task:
            raise ValueError(f"config is not a {CONFIG_KIND} config for task {task!r}")
        return cls(task, bytes(weights), dict(config))

    @property
    def weights_sha256(self) -> str:
        return hashlib.sha256(self.weights).hexdigest()


def fine_tune(pipeline, settings: TuneSettings, train: list[TuneExample], validation: list[TuneExample], *,
              resume_state: bytes | None = None, on_progress: Callable[[TuneProgress], None] | None = None,
              on_checkpoint: Callable[[bytes, int], None] | None = None,
              should_stop: Callable[[], bool] | None = None) -> TunedParts | None:
    """Train the task's parts on `train`, validating on `validation`; None if should_stop() turned true.

    on_progress gets a TuneProgress after every step (validation_metric set on validation steps);
    on_checkpoint gets (state, step) every settings.checkpoint_every steps, a self-contained state that
    resume_state= continues from (same settings and examples: the run then ends as an uninterrupted one would).
    should_stop is called before every step: keep it cheap. The base pipeline is left exactly as it was.
    """
    started = time.monotonic()
    splits = {"train": train, "validation": validation}
    method, labels = settings.resolved_method, label_set(pipeline, settings, splits)
    resume = _read_state(resume_state, settings)  # refused before any work if it belongs to another run
    generator = torch.Generator().manual_seed(settings.seed)
    parts = new_parts(pipeline.model, method, settings.lora_r, settings.seed)
    tuning = _tuning(pipeline, settings, method, parts, labels, splits, generator)
    hooks = LoopHooks(resume=resume, checkpoint_every=settings.checkpoint_every,
                      should_stop=should_stop, generator=generator,
                      on_step=_progress_reporter(settings, on_progress),
                      on_checkpoint=_checkpoint_writer(settings, on_checkpoint))
    cfg = LoopCfg(steps=settings.max_steps, lr=settings.learning_rate, weight_decay=settings.weight_decay,
                  warmup=settings.warmup_steps, eval_every=settings.eval_every, patience=settings.patience,
                  seed=settings.seed)
    with frozen_base(pipeline.model):
        loop = run_loop(parts, tuning.loss, tuning.validate, cfg, desc=f"fine-tune {settings.task} ({method})", hooks=hooks)
    if loop.get("stopped"):
        return None
    report = {"validation_metric": VALIDATION_METRIC[method], "validation_curve": loop["history"],
              "best_step": loop["best_step"], "best_metric": loop["best_metric"], "steps": loop["step"],
              "stopped_early": loop["step"] < settings.max_steps,
              "splits": {"train": len(train), "validation": len(validation)}}
    if method == "adalora":
        report["ranks"] = parts.lora.allocate_ranks(ADALORA_KEEP_FRACTION)
    return _tuned_parts(pipeline, settings, method, labels, parts, report, started)


def _tuned_parts(pipeline, settings: TuneSettings, method: str, labels, parts, report: dict, started: float) -> TunedParts:
    parts.eval().requires_grad_(False)
    state = {k: v.detach().to("cpu").contiguous() for k, v in parts.state_dict().items()}
    config = {"kind": CONFIG_KIND, "format": STATE_FORMAT, "task": settings.task, "method": method,
              "labels": list(labels), "base_model": base_version(pipeline), "base_name": pipeline.model.cfg.name,
              "settings": _plain_settings(settings), **parts_config(pipeline.model, method, parts)}
    report = {**report, "trainable_parameters": sum(v.numel() for v in state.values()),
              "seconds": round(time.monotonic() - started, 2)}
    return TunedParts(settings.task, save_safetensors(state), config, report)


VALIDATION_METRIC = {"head": "macro_f1", "contrastive": "macro_f1", "lora": "-loss", "adalora": "-loss"}


def label_set(pipeline, settings: TuneSettings, splits: dict[str, list[TuneExample]]) -> tuple[str, ...]:
    """The classes a classifying task predicts; every target must be one (a ValueError names the first that is not)."""
    if settings.task == "sentiment":
        labels = tuple(pipeline.model.cfg.heads.sentiment_labels)
    elif settings.task == "classify":
        labels = settings.labels or tuple(sorted({e.target.strip() for examples in splits.values() for e in examples}))
        if len(labels) < 2:
            raise ValueError(f"labels: classify needs at least two labels, got {list(labels)}")
    else:
        return ()
    for split, examples in splits.items():
        for index, example in enumerate(examples):
            if example.target.strip() not in labels:
                raise ValueError(f"{split} example {index}: label {example.target!r} is not one of {list(labels)}")
    return labels


def evaluate_tuned(pipeline, task: str, examples: list[TuneExample], parts: TunedParts | None = None,
                   labels: tuple[str, ...] = ()) -> dict:
    """The held-out report of a version (parts=None: the base pipeline) on `examples`, with its headline "metric".

    sentiment / classify: scikit-learn's classification_report dict plus accuracy and macro_f1 (the metric);
    vqa: accuracy, caption: exact_match (case- and space-insensitive). classify's label set: `labels`, else the
    version's, else the examples' targets.
    """
    if task not in TUNABLE_TASKS:
        raise ValueError(f"task: {task!r} cannot be evaluated; expected one of {TUNABLE_TASKS}")
    if not examples:
        raise ValueError("examples: nothing to evaluate")
    runner = pipeline if parts is None else apply_tuned(pipeline, parts)
    predicted: list[str] = []
    if task == "classify":
        stored = parts.config.get("labels") if parts is not None else None
        labels = tuple(labels) or tuple(stored or sorted({e.target.strip() for e in examples}))
    for start in range(0, len(examples), EVAL_BATCH):
        chunk = examples[start : start + EVAL_BATCH]
        predicted += _predict(runner, task, chunk, labels)
    truth = [e.target.strip() for e in examples]
    if task in ("sentiment", "classify"):
        names = tuple(pipeline.model.cfg.heads.sentiment_labels) if task == "sentiment" else labels
        return classification_metrics(truth, predicted, names)
    matches = sum(_normalised(p) == _normalised(t) for p, t in zip(predicted, truth)) / len(truth)
    key = "accuracy" if task == "vqa" else "exact_match"
    return {key: matches, "metric": matches, "n": len(truth)}


EVAL_BATCH = 64


def _predict(runner, task: str, chunk: list[TuneExample], labels: tuple[str, ...]) -> list[str]:
    images = [e.image for e in chunk]
    if task == "sentiment":
        return [r["label"] for r in runner.sentiment(images, [e.text for e in chunk])]
    if task == "classify":
        return [r["label"] for r in runner.classify(images, [list(labels)] * len(chunk))]
    if task == "vqa":
        return runner.answer(images, [e.text for e in chunk])
    return runner.caption(images)


def _normalised(text: str) -> str:
    return " ".join(text.lower().split())


def classification_metrics(truth: list[str], predicted: list[str], names: tuple[str, ...]) -> dict:
    """classification_report as plain JSON values, plus accuracy, macro_f1 and metric (= macro_f1) and n."""
    from sklearn.metrics import classification_report, f1_score

    report = classification_report(truth, predicted, labels=list(names), output_dict=True, zero_division=0)
    macro = float(f1_score(truth, predicted, labels=list(names), average="macro", zero_division=0))
    accuracy = sum(t == p for t, p in zip(truth, predicted)) / len(truth)
    return {**_plain(report), "accuracy": accuracy, "macro_f1": macro, "metric": macro, "n": len(truth)}


def _plain(value):
    """numpy scalars inside a report → Python numbers (the report is stored as JSON)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if hasattr(value, "item"):
        return value.item()
    return value


def _tuning(pipeline, settings: TuneSettings, method: str, parts, labels, splits: dict, generator):
    for name, examples in splits.items():
        if not examples:
            raise ValueError(f"{name}: no examples")
    targets = {name: torch.tensor([labels.index(e.target.strip()) for e in examples]) for name, examples in splits.items()} \
        if labels else {}
    if method == "head":
        return SentimentTuning(pipeline, parts, splits, targets, settings.batch_size, generator)
    if method == "contrastive":
        return ContrastiveTuning(pipeline, parts, splits, targets, labels, settings.batch_size, generator)
    return GenerativeTuning(pipeline, parts, splits, settings.task, settings.batch_size, generator)


@contextmanager
def frozen_base(model: torch.nn.Module):
    """Within the block no base parameter requires grad: backward reaches only the tuned parts, and is cheaper."""
    flags = [(param, param.requires_grad) for param in model.parameters()]
    for param, _ in flags:
        param.requires_grad_(False)
    try:
        yield model
    finally:
        for param, flag in flags:
            param.requires_grad_(flag)


def _progress_reporter(settings: TuneSettings, on_progress):
    if on_progress is None:
        return None

    def report(step: dict) -> None:
        on_progress(TuneProgress(step["step"], settings.max_steps, float(step["loss"]), step["validation"],
                                 step["best_metric"], step["best_step"]))

    return report


def _checkpoint_writer(settings: TuneSettings, on_checkpoint):
    if on_checkpoint is None:
        return None

    def write(snapshot: dict) -> None:
        buffer = io.BytesIO()
        torch.save({"format": STATE_FORMAT, "settings": _plain_settings(settings), "loop": snapshot}, buffer)
        on_checkpoint(buffer.getvalue(), snapshot["state"]["step"])

    return write


def _read_state(resume_state: bytes | None, settings: TuneSettings) -> dict | None:
    if resume_state is None:
        return None
    saved = torch.load(io.BytesIO(resume_state), map_location="cpu", weights_only=True)
    if saved.get("format") != STATE_FORMAT or saved.get("settings") != _plain_settings(settings):
        raise ValueError("resume_state was written by a run with other settings; start again without it")
    return saved["loop"]


def _plain_settings(settings: TuneSettings) -> dict:
    return {**dataclasses.asdict(settings), "labels": list(settings.labels)}


def base_version(pipeline) -> str:
    """The base checkpoint's version without a runtime variant (an int8 copy serves the same tuned parts)."""
    return pipeline.model_version.split("+", 1)[0]


def apply_tuned(pipeline, parts: TunedParts) -> TunedPipeline:
    """The pipeline's API with `parts` applied over the same base model objects (nothing of the base is copied)."""
    config = parts.config
    if config.get("base_name") != pipeline.model.cfg.name:
        raise ValueError(f"this version was tuned on {config.get('base_name')!r}, not {pipeline.model.cfg.name!r}")
    module = rebuild_parts(pipeline.model, config["method"], config, load_safetensors(parts.weights))
    version = config.get("name") or f"{pipeline.model_version}+{parts.task}-{parts.weights_sha256[:8]}"
    return TunedPipeline(pipeline, module, version)
