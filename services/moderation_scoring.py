"""Moderation of one input: the jobs its policy asks for, and the verdict from their results (fail closed)."""
from __future__ import annotations

import functools
import hashlib
import io
import json
from dataclasses import dataclass
from typing import Any

from PIL import Image

from db.models import Job
from db.moderation import NewDecision, PolicyVersion
from db.queries import ImageFacts
from services.config import ServiceSettings
from services.errors import InputError
from services.input_checks import CheckedJob, check_image, check_params

# A text-only input is scored by the sentiment head over this plain grey image: the same pixels for every text,
# so only the text moves the score. Zero-shot categories compare prompts with an image and are not applied.
PLACEHOLDER_GREY = (128, 128, 128)
PLACEHOLDER_SIDE = 64
SENTIMENT_KEY = "sentiment"


@dataclass(frozen=True)
class ModerationItem:
    """One input to judge: a text, an image, or both (a post)."""

    text: str | None
    image: ImageFacts | None

    @property
    def input_sha256(self) -> str:
        canonical = json.dumps({"image_sha256": self.image.sha256 if self.image else None, "text": self.text})
        return hashlib.sha256(canonical.encode()).hexdigest()


@functools.cache
def _placeholder_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (PLACEHOLDER_SIDE, PLACEHOLDER_SIDE), PLACEHOLDER_GREY).save(buffer, "PNG")
    return buffer.getvalue()


def placeholder_image(settings: ServiceSettings) -> ImageFacts:
    """The neutral image text-only inputs are scored over (stored like any image, once per tenant)."""
    return check_image(_placeholder_png(), settings, "input")


def check_item_text(text: str | None, field: str, settings: ServiceSettings) -> str | None:
    """The text as the sentiment task takes it (same limits as POST /v1/jobs)."""
    if text is None:
        return None
    try:
        return check_params("sentiment", {"text": text}, settings)["text"]
    except InputError as exc:
        raise InputError(field, exc.message, exc.status) from None


def jobs_for_item(item: ModerationItem, index: int, policy: PolicyVersion,
                  settings: ServiceSettings) -> dict[str, CheckedJob]:
    """The jobs that score an item, by category name (zero-shot, image only) and SENTIMENT_KEY."""
    jobs: dict[str, CheckedJob] = {}
    # Moderation always scores with the base model: a policy's thresholds are set against its scores, and a tenant's
    # promoted sentiment or classify version must not silently move them.
    base = settings.fine_tune_base_models[0]
    for name, category in policy.categories.items():
        if category.get("source", "classify") == "classify" and item.image is not None:
            labels = list(category["labels"]) + list(category["against"])
            jobs[name] = CheckedJob(task="classify", params={"labels": labels}, image=item.image, priority=0,
                                    ref=f"moderation[{index}].{name}", model=base)
    wants_sentiment = any(c.get("source") == "sentiment" for c in policy.categories.values())
    if wants_sentiment and (item.text or item.image is not None):
        jobs[SENTIMENT_KEY] = CheckedJob(task="sentiment", params={"text": item.text or ""},
                                         image=item.image or placeholder_image(settings), priority=0,
                                         ref=f"moderation[{index}].{SENTIMENT_KEY}", model=base)
    return jobs


def _sentiment_inputs(item: ModerationItem) -> list[str]:
    return [kind for kind, present in (("image", item.image is not None), ("text", bool(item.text))) if present]


def _why_unscored(job: Job | None, wait_seconds: float) -> str:
    if job is None:
        return "its job was not found"
    if job.status in ("queued", "running"):
        return f"job {job.id} was still {job.status} after {wait_seconds:g}s (no worker serving?)"
    return f"job {job.id} {job.status}" + (f" ({job.error_code}): {job.error}" if job.error else "")


def _score(category: dict[str, Any], job: Job) -> float:
    if category.get("source") == "sentiment":
        return float(job.result["probabilities"]["negative"])
    return float(sum(job.result["scores"][label] for label in category["labels"]))


@dataclass
class Verdict:
    """The verdict's parts as they are filled in, category by category."""

    categories: dict[str, bool]
    scores: dict[str, float | None]
    applied: dict[str, list[str]]
    failures: list[str]


def _judge(verdict: Verdict, name: str, category: dict[str, Any], job: Job | None, applied: list[str],
           wait_seconds: float) -> None:
    verdict.applied[name] = applied
    if job is None and not applied:  # the category does not apply to this kind of input: nothing to score
        verdict.categories[name], verdict.scores[name] = False, 0.0
    elif job is not None and job.status == "succeeded":
        verdict.scores[name] = round(_score(category, job), 6)
        verdict.categories[name] = verdict.scores[name] >= category["threshold"]
    else:  # fail closed: a category the model could not score counts as flagged, with no score
        verdict.categories[name], verdict.scores[name] = True, None
        verdict.failures.append(f"{name}: {_why_unscored(job, wait_seconds)}")


def decide(item: ModerationItem, policy: PolicyVersion, item_jobs: dict[str, Job | None],
           wait_seconds: float) -> NewDecision:
    """The item's verdict under the policy: each category from its job, flagged if any is (or any went unscored)."""
    verdict = Verdict({}, {}, {}, [])
    for name, category in policy.categories.items():
        if category.get("source") == "sentiment":
            key, applied = SENTIMENT_KEY, _sentiment_inputs(item)
        else:
            key, applied = name, ["image"] if item.image is not None else []
        _judge(verdict, name, category, item_jobs.get(key), applied if key in item_jobs else [], wait_seconds)
    versions = sorted({job.model_version for job in item_jobs.values() if job is not None and job.model_version})
    return NewDecision(
        input_sha256=item.input_sha256, image_sha256=item.image.sha256 if item.image else None, text=item.text,
        model_version=", ".join(versions) or None, policy_version=policy.version,
        flagged=any(verdict.categories.values()) or bool(verdict.failures), categories=verdict.categories,
        category_scores=verdict.scores, category_applied_input_types=verdict.applied,
        failure="; ".join(verdict.failures) or None,
        job_ids=[str(job.id) for job in item_jobs.values() if job is not None])
