"""Checks a POST /v1/fine_tuning/jobs body (task, model, files, labels, suffix, metadata) and its hyperparameters."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from db.models import Task
from services.config import ServiceSettings
from services.errors import InputError
from services.fine_tune_data import SENTIMENT_LABELS
from services.input_checks import check_labels

# The keys and defaults of multimodal.finetune.TuneSettings (not imported: the API stays torch-free).
LIBRARY_DEFAULTS: dict[str, Any] = {
    "max_steps": 200, "batch_size": 16, "learning_rate": 1e-3, "weight_decay": 0.01, "warmup_steps": 10,
    "eval_every": 20, "patience": 3, "checkpoint_every": 20, "seed": 0, "method": "auto", "lora_r": 8,
}
# OpenAI's knobs that map honestly: n_epochs becomes max_steps once the training split's size is known, and
# learning_rate_multiplier scales the library's default learning rate; "auto" means the default.
OPENAI_KEYS = ("n_epochs", "learning_rate_multiplier")
METHODS = {"sentiment": ("auto", "head"), "vqa": ("auto", "lora", "adalora"), "caption": ("auto", "lora", "adalora"),
           "classify": ("auto", "contrastive")}
BODY_FIELDS = ("model", "training_file", "validation_file", "hyperparameters", "suffix", "seed", "metadata", "method",
               "task", "labels")
SUFFIX = re.compile(r"[A-Za-z0-9._-]{1,40}")
MAX_METADATA_KEYS = 16
MAX_SEED = 2**31 - 1
# (lowest, highest) per numeric key; None: the settings' cap.
RANGES: dict[str, tuple[float, float | None]] = {
    "max_steps": (1, None), "batch_size": (1, None), "learning_rate": (1e-8, 1.0), "weight_decay": (0.0, 1.0),
    "warmup_steps": (0, None), "eval_every": (1, None), "patience": (1, 1000), "checkpoint_every": (1, None),
    "seed": (0, MAX_SEED), "lora_r": (1, 256), "n_epochs": (1, 100), "learning_rate_multiplier": (1e-3, 100.0),
}
INTEGER_KEYS = ("max_steps", "batch_size", "warmup_steps", "eval_every", "patience", "checkpoint_every", "seed",
                "lora_r", "n_epochs")


@dataclass(frozen=True)
class FineTuneRequest:
    """A create body whose fields passed their checks (the files are read and checked after)."""

    task: str
    model: str
    training_file: str
    validation_file: str | None
    hyperparameters: dict[str, Any]  # as given, checked; resolved once the training split's size is known
    suffix: str | None
    metadata: dict[str, str] | None
    labels: tuple[str, ...]


def _bad(field: str, message: str) -> InputError:
    return InputError(field, message, 400)


def _number(key: str, value: Any, settings: ServiceSettings, field: str | None = None) -> int | float:
    field = field or f"hyperparameters.{key}"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _bad(field, f"{key} must be a number")
    if key in INTEGER_KEYS and value != int(value):
        raise _bad(field, f"{key} must be a whole number")
    low, high = RANGES[key]
    caps = {"max_steps": settings.fine_tune_max_steps, "batch_size": settings.fine_tune_max_batch_size}
    high = high if high is not None else caps.get(key, settings.fine_tune_max_steps)
    if not low <= value <= high:
        raise _bad(field, f"{key} must be between {low:g} and {high:g}")
    return int(value) if key in INTEGER_KEYS else float(value)


def check_hyperparameters(task: str, raw: Any, settings: ServiceSettings) -> dict[str, Any]:
    """The given hyperparameters, each checked; an unknown key, or two keys saying one thing, is a 400."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise _bad("hyperparameters", "hyperparameters must be an object")
    checked: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in LIBRARY_DEFAULTS and key not in OPENAI_KEYS:
            shown = str(key).encode("unicode_escape").decode("ascii")[:64]
            raise _bad(f"hyperparameters.{shown}", f"unknown hyperparameter {shown!r}; known: "
                       f"{', '.join([*LIBRARY_DEFAULTS, *OPENAI_KEYS])}")
        if value == "auto" and key in (*OPENAI_KEYS, "batch_size"):
            continue  # OpenAI's word for the default
        if key == "method":
            if value not in METHODS[task]:
                raise _bad("hyperparameters.method",
                           f"method for task {task} must be one of {', '.join(METHODS[task])}")
            checked[key] = value
        else:
            checked[key] = _number(key, value, settings)
    for openai_key, library_key in (("n_epochs", "max_steps"), ("learning_rate_multiplier", "learning_rate")):
        if openai_key in checked and library_key in checked:
            raise _bad(f"hyperparameters.{openai_key}", f"give {openai_key} or {library_key}, not both")
    return checked


def resolve_hyperparameters(given: dict[str, Any], *, train_examples: int, labels: tuple[str, ...], task: str,
                            settings: ServiceSettings) -> dict[str, Any]:
    """What the worker hands TuneSettings.from_hyperparameters: every library key, OpenAI's mapped onto them."""
    resolved = {**LIBRARY_DEFAULTS, **{key: value for key, value in given.items() if key not in OPENAI_KEYS}}
    if "n_epochs" in given:
        steps = math.ceil(given["n_epochs"] * train_examples / resolved["batch_size"])
        resolved["max_steps"] = min(max(1, steps), settings.fine_tune_max_steps)
    if "learning_rate_multiplier" in given:
        resolved["learning_rate"] = LIBRARY_DEFAULTS["learning_rate"] * given["learning_rate_multiplier"]
    if task == "classify":
        resolved["labels"] = list(labels)
    return resolved


def openai_hyperparameters(stored: dict[str, Any], train_examples: int) -> dict[str, Any]:
    """The stored hyperparameters with OpenAI's three alongside (n_epochs as the passes max_steps makes)."""
    batch_size = stored.get("batch_size", LIBRARY_DEFAULTS["batch_size"])
    epochs = stored.get("max_steps", 0) * batch_size / train_examples if train_examples else None
    rate = stored.get("learning_rate", LIBRARY_DEFAULTS["learning_rate"]) / LIBRARY_DEFAULTS["learning_rate"]
    return {**stored, "n_epochs": round(epochs, 2) if epochs is not None else "auto", "batch_size": batch_size,
            "learning_rate_multiplier": round(rate, 6)}


def _check_metadata(value: Any) -> dict[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or len(value) > MAX_METADATA_KEYS or not all(
            isinstance(k, str) and isinstance(v, str) and len(k) <= 64 and len(v) <= 512 for k, v in value.items()):
        raise _bad("metadata", f"metadata must map up to {MAX_METADATA_KEYS} keys (64 chars) to strings (512 chars)")
    return value


def _check_labels(task: str, value: Any, settings: ServiceSettings) -> tuple[str, ...]:
    if task != "classify":
        if value is not None:
            raise _bad("labels", "labels are given for task classify only (sentiment's are negative, neutral, "
                                 "positive)")
        return SENTIMENT_LABELS if task == "sentiment" else ()
    try:
        return tuple(check_labels(value, settings))
    except InputError as exc:
        raise _bad(exc.field, exc.message) from None


def _merge_method(body: dict[str, Any], hyperparameters: Any) -> Any:
    """OpenAI's newer `method: {type: supervised, supervised: {hyperparameters}}` read as hyperparameters."""
    method = body.get("method")
    if method is None:
        return hyperparameters
    if not isinstance(method, dict) or method.get("type") != "supervised":
        raise _bad("method", "method.type must be supervised (the one LensQ runs)")
    inner = (method.get("supervised") or {}).get("hyperparameters") if isinstance(method.get("supervised"),
                                                                                  dict) else None
    if inner is not None and hyperparameters is not None:
        raise _bad("method", "give hyperparameters or method.supervised.hyperparameters, not both")
    return inner if inner is not None else hyperparameters


def _check_string_field(body: dict[str, Any], name: str, *, required: bool) -> str | None:
    value = body.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise _bad(name, f"{name} is required: a string" if value is None else f"{name} must be a string")
    return value


def check_request(body: Any, settings: ServiceSettings) -> FineTuneRequest:
    """Every field of a create body but the files' contents; a 400 naming the first field that fails."""
    if not isinstance(body, dict):
        raise _bad("body", "the body must be a JSON object")
    for name in body:
        if name not in BODY_FIELDS:
            shown = str(name).encode("unicode_escape").decode("ascii")[:64]
            raise _bad(shown, f"unknown field {shown!r}; allowed: {', '.join(BODY_FIELDS)}")
    task = body.get("task")
    if task not in [t.value for t in Task]:
        raise _bad("task", f"task is required: one of {', '.join(t.value for t in Task)}")
    model = _check_string_field(body, "model", required=True)
    if model not in settings.fine_tune_base_models:
        raise _bad("model", "model must be a base model this service fine-tunes: "
                   f"{', '.join(settings.fine_tune_base_models)}")
    suffix = _check_string_field(body, "suffix", required=False)
    if suffix is not None and not SUFFIX.fullmatch(suffix):
        raise _bad("suffix", "suffix must be 1 to 40 characters of letters, digits, '.', '_' or '-'")
    hyperparameters = check_hyperparameters(task, _merge_method(body, body.get("hyperparameters")), settings)
    if body.get("seed") is not None:
        seed = _number("seed", body["seed"], settings, "seed")
        if hyperparameters.get("seed", seed) != seed:
            raise _bad("seed", "seed and hyperparameters.seed differ")
        hyperparameters["seed"] = seed
    return FineTuneRequest(
        task=task, model=model, training_file=_check_string_field(body, "training_file", required=True),
        validation_file=_check_string_field(body, "validation_file", required=False),
        hyperparameters=hyperparameters, suffix=suffix, metadata=_check_metadata(body.get("metadata")),
        labels=_check_labels(task, body.get("labels"), settings))
