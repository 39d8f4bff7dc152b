"""Runs one claimed batch through the pipeline: one call per task, each job's failure its own."""
from __future__ import annotations

import json
import logging
from collections import defaultdict
from typing import Any

from db.queries import ClaimedJob, JobOutcome
from workers.model import decode_image_bytes

log = logging.getLogger(__name__)


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


def _run_group(pipeline: Any, task: str, jobs: list[ClaimedJob], images: dict[str, Any]) -> dict[Any, JobOutcome]:
    """One batched call for the group; if it raises, each job runs alone so only the culprit fails."""
    version = pipeline.model_version
    try:
        results = run_task(pipeline, task, [images[j.image_sha256] for j in jobs], [j.params for j in jobs])
        return {j.id: JobOutcome(j.id, result=_as_json(r), model_version=version) for j, r in zip(jobs, results)}
    except Exception:
        log.exception("batched %s call failed; running its %d jobs one by one", task, len(jobs))
    outcomes = {}
    for job in jobs:
        try:
            [result] = run_task(pipeline, task, [images[job.image_sha256]], [job.params])
            outcomes[job.id] = JobOutcome(job.id, result=_as_json(result), model_version=version)
        except Exception as exc:
            outcomes[job.id] = JobOutcome(job.id, error=f"model: {exc.__class__.__name__}: {exc}", model_version=version)
    return outcomes


def run_batch(pipeline: Any, jobs: list[ClaimedJob]) -> list[JobOutcome]:
    """One outcome per claimed job, in claim order."""
    images, decode_errors = _decode_all(jobs)
    outcomes: dict[Any, JobOutcome] = {
        j.id: JobOutcome(j.id, error=decode_errors[j.image_sha256]) for j in jobs if j.image_sha256 in decode_errors
    }
    by_task: dict[str, list[ClaimedJob]] = defaultdict(list)
    for job in jobs:
        if job.id not in outcomes:
            by_task[job.task].append(job)
    for task, group in by_task.items():
        outcomes.update(_run_group(pipeline, task, group, images))
    return [outcomes[job.id] for job in jobs]
