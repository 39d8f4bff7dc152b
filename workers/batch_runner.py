"""Runs one claimed batch through the pipeline: one time-limited call per task and model version, each job's failure
its own."""
from __future__ import annotations

import json
import logging
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import OperationalError

from db.models import ErrorCode
from db.queries import ClaimedJob, JobOutcome
from workers.adapters import VersionUnusable, tuned_pipelines
from workers.config import WorkerSettings, current_settings
from workers.faults import stall_if_marked, stall_seconds
from workers.metrics import IMAGES_ENCODED_AHEAD, timed_model_call
from workers.model import preprocess_pool
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


def run_task(pipeline: Any, task: str, images: list[Any], params: list[dict[str, Any]],
             image_keys: list[str] | None = None) -> list[dict[str, Any]]:
    """One batched pipeline call for `task`; one result dict per image (keys: the images' sha256, for the cache)."""
    if task == "caption":
        return [{"caption": text} for text in pipeline.caption(images, image_keys=image_keys)]
    if task == "vqa":
        answers = pipeline.answer(images, [p["question"] for p in params], image_keys=image_keys)
        return [{"answer": text} for text in answers]
    if task == "sentiment":
        return pipeline.sentiment(images, [p.get("text", "") for p in params], image_keys=image_keys)
    if task == "classify":
        return pipeline.classify(images, [p["labels"] for p in params])
    raise ValueError(f"unknown task {task!r}")


def _as_json(value: dict[str, Any]) -> dict[str, Any]:
    """A result made of plain JSON types (numpy or torch scalars become floats)."""
    return json.loads(json.dumps(value, default=float))


def _prepare_one(pipeline: Any, data: bytes) -> tuple[Any, str | None]:
    """One image as the model reads it, or the reason it failed."""
    try:
        return pipeline.prepare(data), None
    except Exception as exc:
        return None, f"image: {exc}"


@dataclass(frozen=True)
class DecodedImages:
    """A batch's distinct images as the model reads them, by sha256, and the reasons the bad ones failed."""

    images: dict[str, Any]
    errors: dict[str, str]


def decode_all(pipeline: Any, jobs: list[ClaimedJob]) -> DecodedImages:
    """Each distinct image decoded and fitted to the model's size once, in the preprocessing pool (Pillow
    releases the GIL while it decodes and resizes)."""
    data = {job.image_sha256: job.image_data for job in jobs}
    prepared = preprocess_pool().map(lambda blob: _prepare_one(pipeline, blob), data.values())
    decoded = DecodedImages(images={}, errors={})
    for sha256, (image, error) in zip(data, prepared):
        if error is None:
            decoded.images[sha256] = image
        else:
            decoded.errors[sha256] = error
    return decoded


# The tasks whose base-model call reads its image embeddings through the pipeline's cache (classify reads the
# CLIP tower's own features; a fine-tuned version's generation reads its own projector's).
EMBEDDING_TASKS = ("caption", "vqa", "sentiment")


def encode_ahead(pipeline: Any, jobs: list[ClaimedJob], decoded: DecodedImages, budget: CallBudget) -> int:
    """Runs the vision tower over a claimed batch's distinct images now, on this thread, into the pipeline's
    embedding cache: the claim-ahead thread does this while the model's thread runs the previous batch, which
    then finds them there and runs only the LM. Returns how many images it encoded or found cached.

    Nothing depends on it: an entry evicted meanwhile, or a failure here, only means the model's own call
    encodes the image (and, if that fails too, runs each job alone). Off the main thread only the call's hard
    limit applies (workers.time_limits)."""
    cache = getattr(pipeline, "embedding_cache", None)
    chosen = {job.image_sha256: job.task for job in jobs if job.model_version_id is None
              and job.task in EMBEDDING_TASKS and job.image_sha256 in decoded.images}
    keys = list(chosen)
    # The model's thread caches the batch it is running as well: with room for fewer than two batches, this
    # batch's entries could be evicted before they are read, and the work done twice.
    if cache is None or not keys or cache.max_entries < 2 * len(keys):
        return 0
    try:
        with time_limit(budget.seconds, grace=budget.grace):
            pipeline.image_embeddings([decoded.images[key] for key in keys], keys)
    except Exception:
        log.warning("encoding %d images ahead failed; the model's call encodes them", len(keys), exc_info=True)
        return 0
    for task, count in Counter(chosen.values()).items():
        IMAGES_ENCODED_AHEAD.labels(task=task).inc(count)
    return len(keys)


def _call(pipeline: Any, task: str, jobs: list[ClaimedJob], images: dict[str, Any],
          budget: CallBudget) -> list[dict[str, Any]]:
    """One batched call for `jobs`, cut off at the budget."""
    params = [j.params for j in jobs]
    with time_limit(budget.seconds, grace=budget.grace), timed_model_call(task):
        stall_if_marked(params, budget.stall_seconds)
        return run_task(pipeline, task, [images[j.image_sha256] for j in jobs], params,
                        image_keys=[j.image_sha256 for j in jobs])


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


def run_batch(pipeline: Any, jobs: list[ClaimedJob], budget: CallBudget | None = None,
              decoded: DecodedImages | None = None) -> list[JobOutcome]:
    """One outcome per claimed job, in claim order; `decoded`: the jobs' images, when decoded ahead of time."""
    budget = budget or CallBudget.from_settings(current_settings())
    decoded = decoded or decode_all(pipeline, jobs)
    images, decode_errors = decoded.images, decoded.errors
    outcomes: dict[Any, JobOutcome] = {
        j.id: JobOutcome(j.id, error=decode_errors[j.image_sha256], error_code=ErrorCode.input.value)
        for j in jobs if j.image_sha256 in decode_errors
    }
    # One batched call per task and model version: tenants' versions share the batch, each on its own adapter.
    by_group: dict[tuple[str, Any], list[ClaimedJob]] = defaultdict(list)
    for job in jobs:
        if job.id not in outcomes:
            by_group[(job.task, job.model_version_id)].append(job)
    for (task, version_id), group in by_group.items():
        outcomes.update(_run_on_version(pipeline, task, version_id, group, images, budget))
    return [outcomes[job.id] for job in jobs]


def _run_on_version(pipeline: Any, task: str, version_id: Any, jobs: list[ClaimedJob], images: dict[str, Any],
                    budget: CallBudget) -> dict[Any, JobOutcome]:
    """The group on the version its jobs asked for (the base model when none); a version that cannot run here
    fails its jobs as input errors, one that cannot be loaded as model errors."""
    if version_id is None:
        return _run_group(pipeline, task, jobs, images, budget)
    try:
        tuned = tuned_pipelines().get(pipeline, version_id)
    except VersionUnusable as exc:
        return {j.id: JobOutcome(j.id, error=str(exc), error_code=ErrorCode.input.value) for j in jobs}
    except OperationalError:
        raise  # the ledger is down: the lease lapses and the jobs are retried, not failed
    except Exception as exc:
        log.exception("could not load model version %s for %d jobs", version_id, len(jobs))
        error = f"model: version {version_id} could not be loaded: {exc.__class__.__name__}: {exc}"
        return {j.id: JobOutcome(j.id, error=error, error_code=ErrorCode.model.value) for j in jobs}
    return _run_group(tuned, task, jobs, images, budget)
