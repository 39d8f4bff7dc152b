"""Runs one claimed batch through the pipeline: one time-limited call per task, each job's failure its own."""
from __future__ import annotations

import json
import logging
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from db.models import ErrorCode
from db.queries import ClaimedJob, JobOutcome
from workers.config import WorkerSettings
from workers.faults import stall_if_marked, stall_seconds
from workers.model import decode_image_bytes
from workers.time_limits import CallTimedOut, time_limit

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CallBudget:
    """How long one model call may run, and the injected stall (0 unless fault injection is on)."""

    seconds: float
    grace: float
    stall_seconds: float = 0.0

    @classmethod
    def from_settings(cls, settings: WorkerSettings) -> CallBudget:
        return cls(seconds=settings.job_time_limit_seconds, grace=settings.time_limit_grace_seconds,
                   stall_seconds=stall_seconds(settings))


def run_task(pipeline: Any, task: str, images: list[Any], params: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One batched pipeline call for `task`; one result dict per image."""
    if task == "caption":
        return [{"caption": text} for text in pipeline.caption(images)]
    if task == "vqa":
        answers = pipeline.answer(images, [p["question"] for p in params])
        return [{"answer": text} for text in answers]
    if task == "sentiment":
        return pipeline.sentiment(images, [p.get("text", "") for p in params])
    if task == "classify":
        return pipeline.classify(images, [p["labels"] for p in params])
    raise ValueError(f"unknown task {task!r}")


def _as_json(value: dict[str, Any]) -> dict[str, Any]:
    """A result made of plain JSON types (numpy or torch scalars become floats)."""
    return json.loads(json.dumps(value, default=float))


def _decode_all(jobs: list[ClaimedJob]) -> tuple[dict[str, Any], dict[str, str]]:
    """Each distinct image decoded once: the images by sha256, and the reasons the bad ones failed."""
    images: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for job in jobs:
        if job.image_sha256 in images or job.image_sha256 in errors:
            continue
        try:
            images[job.image_sha256] = decode_image_bytes(job.image_data)
        except Exception as exc:
            errors[job.image_sha256] = f"image: {exc}"
    return images, errors


def _call(pipeline: Any, task: str, jobs: list[ClaimedJob], images: dict[str, Any],
          budget: CallBudget) -> list[dict[str, Any]]:
    """One batched call for `jobs`, cut off at the budget."""
    params = [j.params for j in jobs]
    with time_limit(budget.seconds, grace=budget.grace):
        stall_if_marked(params, budget.stall_seconds)
        return run_task(pipeline, task, [images[j.image_sha256] for j in jobs], params)


def _run_alone(pipeline: Any, task: str, job: ClaimedJob, images: dict[str, Any], budget: CallBudget) -> JobOutcome:
    """One job in a call of its own: its result, or its own model error or timeout."""
    version = pipeline.model_version
    try:
        [result] = _call(pipeline, task, [job], images, budget)
        return JobOutcome(job.id, result=_as_json(result), model_version=version)
    except CallTimedOut as exc:
        return JobOutcome(job.id, error=f"timeout: {exc}", error_code=ErrorCode.timeout.value, model_version=version)
    except Exception as exc:
        return JobOutcome(job.id, error=f"model: {exc.__class__.__name__}: {exc}", error_code=ErrorCode.model.value,
                          model_version=version)


def _run_group(pipeline: Any, task: str, jobs: list[ClaimedJob], images: dict[str, Any],
               budget: CallBudget) -> dict[Any, JobOutcome]:
    """One batched call for the group; if it raises or times out, each job runs alone so only the culprit fails."""
    if len(jobs) > 1:
        try:
            results = _call(pipeline, task, jobs, images, budget)
            return {j.id: JobOutcome(j.id, result=_as_json(r), model_version=pipeline.model_version)
                    for j, r in zip(jobs, results)}
        except CallTimedOut:
            log.warning("batched %s call of %d jobs ran past %gs; running them one by one", task, len(jobs),
                        budget.seconds)
        except Exception:
            log.exception("batched %s call failed; running its %d jobs one by one", task, len(jobs))
    return {job.id: _run_alone(pipeline, task, job, images, budget) for job in jobs}


def run_batch(pipeline: Any, jobs: list[ClaimedJob], budget: CallBudget | None = None) -> list[JobOutcome]:
    """One outcome per claimed job, in claim order."""
    budget = budget or CallBudget.from_settings(WorkerSettings())
    images, decode_errors = _decode_all(jobs)
    outcomes: dict[Any, JobOutcome] = {
        j.id: JobOutcome(j.id, error=decode_errors[j.image_sha256], error_code=ErrorCode.input.value)
        for j in jobs if j.image_sha256 in decode_errors
    }
    by_task: dict[str, list[ClaimedJob]] = defaultdict(list)
    for job in jobs:
        if job.id not in outcomes:
            by_task[job.task].append(job)
    for task, group in by_task.items():
        outcomes.update(_run_group(pipeline, task, group, images, budget))
    return [outcomes[job.id] for job in jobs]
