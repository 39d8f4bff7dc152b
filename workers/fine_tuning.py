"""The fine-tuning runner: claims a training job, trains it under a kept lease with checkpoints, writes its version."""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy.exc import OperationalError

from db.fine_tuning_runs import (
    ClaimedFineTune, NewVersion, StoredExample, add_event, claim_fine_tuning_job, finish_cancelled, finish_failed,
    finish_succeeded, fine_tuning_queue_has_work, load_examples, release_to_queue, renew_fine_tuning_lease,
    store_checkpoint, tenant_default_version,
)
from db.session import session_scope
from workers.celery_app import ring
from workers.config import WorkerSettings
from workers.model import decode_image_bytes, get_pipeline

log = logging.getLogger(__name__)
# The request field a split's examples came from, for errors naming it (the test split is carved from training).
PARAM_OF_SPLIT = {"train": "training_file", "validation": "validation_file", "test": "training_file"}


class TrainingDataError(ValueError):
    """The tenant's data cannot be trained on; the message and param tell the tenant which line and file."""

    def __init__(self, message: str, param: str):
        super().__init__(message)
        self.param = param


class LeaseWatch:
    """A thread that keeps the job's lease alive and, on the same beat, notices a cancel or a lost lease.

    The training loop asks `should_stop()` at every step: it reads two flags, never the database."""

    def __init__(self, job: ClaimedFineTune, settings: WorkerSettings, worker_stopping: Callable[[], bool]):
        self.job, self.settings, self.worker_stopping = job, settings, worker_stopping
        self.lost, self.cancelled, self._done = threading.Event(), threading.Event(), threading.Event()
        self._thread = threading.Thread(target=self._run, name="fine-tune-lease", daemon=True)

    def _interval(self) -> float:
        # A cancel is seen within fine_tune_poll_seconds; the lease is renewed well before it lapses.
        return min(self.settings.lease_seconds / 3, self.settings.fine_tune_poll_seconds)

    def _run(self) -> None:
        while not self._done.wait(self._interval()):
            try:
                with session_scope() as session:
                    state = renew_fine_tuning_lease(session, job_id=self.job.id, lease_token=self.job.lease_token,
                                                    lease_seconds=self.settings.lease_seconds)
            except Exception:  # the database may be back at the next beat; the lease has two more beats to go
                log.exception("could not renew the lease of fine-tuning job %s", self.job.id)
                continue
            if not state.held:
                log.warning("fine-tuning job %s: lease %s lost; stopping", self.job.id, self.job.lease_token)
                self.lost.set()
            if state.cancel_requested:
                self.cancelled.set()

    def should_stop(self) -> bool:
        return self.lost.is_set() or self.cancelled.is_set() or self.worker_stopping()

    def __enter__(self) -> LeaseWatch:
        self._thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self._done.set()
        self._thread.join()


class ProgressRecorder:
    """Turns the library's progress calls into `metrics` events: every validation, else one per few seconds."""

    def __init__(self, job_id, every_seconds: float):
        self.job_id, self.every_seconds, self._last = job_id, every_seconds, 0.0

    def __call__(self, progress: Any) -> None:
        now = time.monotonic()
        final = progress.step >= progress.max_steps
        if progress.validation_metric is None and not final and now - self._last < self.every_seconds:
            return
        self._last = now
        # The API lists an event whose data has a "step" as a `metrics` event.
        data = {"step": progress.step, "max_steps": progress.max_steps, "loss": float(progress.loss),
                "validation_metric": progress.validation_metric, "best_metric": progress.best_metric,
                "best_step": progress.best_step}
        message = f"Step {progress.step}/{progress.max_steps}: training loss={progress.loss:.4f}"
        if progress.validation_metric is not None:
            message += f", validation metric={progress.validation_metric:.4f}"
        with session_scope() as session:
            add_event(session, job_id=self.job_id, message=message, data=data)


def decode_examples(rows: list[StoredExample]) -> dict[str, list[Any]]:
    """The stored examples as the library's TuneExamples, by split; an unreadable image names its line."""
    from multimodal.finetune import TuneExample  # torch is imported here, in the worker only

    splits: dict[str, list[Any]] = {"train": [], "validation": [], "test": []}
    for row in rows:
        try:
            image = decode_image_bytes(row.image_data)
        except ValueError as exc:
            raise TrainingDataError(f"line {row.line} of the {row.split} split: unreadable image ({exc})",
                                    PARAM_OF_SPLIT[row.split]) from exc
        splits[row.split].append(TuneExample(image=image, text=row.text, target=row.target))
    if not splits["train"]:
        raise TrainingDataError("the training split holds no example", "training_file")
    return splits


def label_set(job: ClaimedFineTune, splits: dict[str, list[Any]]) -> tuple[str, ...]:
    """The labels of a classify job: those the data checks recorded, else every target seen (sorted)."""
    if job.task != "classify":
        return ()
    recorded = (job.data_report or {}).get("labels")
    if isinstance(recorded, list) and recorded:
        return tuple(str(label) for label in recorded)
    return tuple(sorted({example.target for examples in splits.values() for example in examples}))


def build_settings(job: ClaimedFineTune, labels: tuple[str, ...]) -> Any:
    """The library's TuneSettings from the job's hyperparameters; an unknown or bad one is the tenant's error."""
    from multimodal.finetune import TuneSettings

    try:
        settings = TuneSettings.from_hyperparameters(job.task, dict(job.hyperparameters))
    except (ValueError, TypeError) as exc:
        raise TrainingDataError(f"invalid hyperparameters: {exc}", "hyperparameters") from exc
    return dataclasses.replace(settings, labels=labels) if labels and not settings.labels else settings


def version_name(job: ClaimedFineTune) -> str:
    """`ft:<base model>:<tenant>:<suffix or custom>:<first 8 hex of the job id>`."""
    return f"ft:{job.base_model}:{job.tenant_name}:{job.suffix or 'custom'}:{job.id.hex[:8]}"


def stored_default(job: ClaimedFineTune) -> tuple[str, Any] | None:
    """The tenant's default version for the task as (name, TunedParts), or None when it has none."""
    from multimodal.finetune import TunedParts

    with session_scope() as session:
        default = tenant_default_version(session, tenant_id=job.tenant_id, task=job.task)
        if default is None:
            return None
        return default.name, TunedParts.from_stored(job.task, default.weights, default.config)


def evaluate_baseline(pipeline: Any, job: ClaimedFineTune, test: list[Any], labels: tuple[str, ...]) -> dict:
    """What the new version must beat on the same split: the tenant's default version, else the base model."""
    from multimodal.finetune import evaluate_tuned

    default = stored_default(job)
    if default is not None:
        try:
            return {"model": default[0], "test": evaluate_tuned(pipeline, job.task, test, default[1], labels=labels)}
        except ValueError as exc:  # e.g. tuned over another base model: the base is the fair comparison then
            log.warning("fine-tuning job %s: default version %s not comparable (%s)", job.id, default[0], exc)
    return {"model": job.base_model, "test": evaluate_tuned(pipeline, job.task, test, None, labels=labels)}


def evaluate_version(pipeline: Any, job: ClaimedFineTune, parts: Any, splits: dict[str, list[Any]],
                     tune_settings: Any) -> dict[str, Any]:
    """The version's eval (test report, the baseline's on the same split, curve, steps, split sizes, command)."""
    from multimodal.finetune import evaluate_tuned

    test, labels = splits["test"], tune_settings.labels
    if not test:  # the API always carves a test split; without one there is nothing to compare
        nothing = {"metric": None, "n": 0}
        tested, baseline = nothing, {"model": job.base_model, "test": nothing}
    else:
        tested = evaluate_tuned(pipeline, job.task, test, parts, labels=labels)
        baseline = evaluate_baseline(pipeline, job, test, labels)
    report = dict(parts.report or {})
    method = (parts.config or {}).get("method", tune_settings.method)
    return {
        "test": tested, "baseline": baseline,
        "validation_curve": report.get("validation_curve", []),
        "best_step": report.get("best_step"),
        "steps": report.get("steps"),
        "splits": {name: len(examples) for name, examples in splits.items()},
        "command": (f"fine_tune(task={job.task!r}, method={method!r}, hyperparameters={job.hyperparameters}) over "
                    f"{job.base_model} in fine-tuning job ftjob-{job.id.hex}, then evaluate_tuned on its test split"),
    }


def announce_start(job: ClaimedFineTune, worker_id: str, splits: dict[str, list[Any]]) -> None:
    """The event that opens a run: a fresh start, or a resume naming the checkpoint's step."""
    sizes = {name: len(examples) for name, examples in splits.items()}
    data = {"attempt": job.attempts, "worker": worker_id, "splits": sizes}
    if job.checkpoint is not None:
        step = job.checkpoint_step or 0
        message, data = f"Resumed training from the checkpoint at step {step}", {**data, "resumed_from_step": step}
    else:
        message = f"Training started ({sizes['train']} train, {sizes['validation']} validation examples)"
    with session_scope() as session:
        add_event(session, job_id=job.id, message=message, data=data)


def train_and_write(job: ClaimedFineTune, worker_id: str, settings: WorkerSettings, watch: LeaseWatch) -> None:
    """Trains the claimed job (from its checkpoint if it has one) and writes its version, or how it stopped."""
    from multimodal.finetune import fine_tune

    pipeline = get_pipeline()
    with session_scope() as session:
        rows = load_examples(session, job_id=job.id)
    splits = decode_examples(rows)
    tune_settings = build_settings(job, label_set(job, splits))
    announce_start(job, worker_id, splits)

    def on_checkpoint(state: bytes, step: int) -> None:
        with session_scope() as session:
            if not store_checkpoint(session, job_id=job.id, lease_token=job.lease_token, state=state, step=step):
                watch.lost.set()  # another worker holds the job now: stop, its progress is the one kept

    parts = fine_tune(pipeline, tune_settings, splits["train"], splits["validation"], resume_state=job.checkpoint,
                      on_progress=ProgressRecorder(job.id, settings.fine_tune_progress_seconds),
                      on_checkpoint=on_checkpoint, should_stop=watch.should_stop)
    if parts is None:
        return write_stop(job, watch)
    name = version_name(job)
    version = NewVersion(name=name, weights=parts.weights, weights_sha256=hashlib.sha256(parts.weights).hexdigest(),
                         config={**parts.config, "name": name},  # what apply_tuned reports as its model_version
                         eval=evaluate_version(pipeline, job, parts, splits, tune_settings),
                         trained_steps=int((parts.report or {}).get("steps") or 0))
    with session_scope() as session:
        written = finish_succeeded(session, job=job, version=version)
    log.info("fine-tuning job %s: %s", job.id, version.name if written else "finished, but its lease was lost")


def write_stop(job: ClaimedFineTune, watch: LeaseWatch) -> None:
    """Training stopped early: the tenant cancelled, the lease was lost (write nothing), or the worker is stopping."""
    if watch.lost.is_set():
        log.warning("fine-tuning job %s stopped: its lease was lost; nothing written", job.id)
        return
    with session_scope() as session:
        if watch.cancelled.is_set():
            finish_cancelled(session, job=job)
            return
        released = release_to_queue(session, job=job, reason="the worker is shutting down")
    if released:
        ring(job.queue, reason="released")  # another worker resumes it from its checkpoint now


def error_for(exc: Exception) -> dict[str, Any]:
    """The OpenAI-style error a tenant reads on a failed job."""
    if isinstance(exc, TrainingDataError):
        code = {"hyperparameters": "invalid_hyperparameters", "validation_file": "invalid_validation_file"}
        return {"code": code.get(exc.param, "invalid_training_file"), "message": str(exc), "param": exc.param}
    return {"code": "training_error", "param": None,
            "message": f"training failed: {type(exc).__name__}: {str(exc)[:500]}"}


def run_claimed(job: ClaimedFineTune, worker_id: str, settings: WorkerSettings,
                worker_stopping: Callable[[], bool]) -> None:
    """Runs one claimed job to its end; an error fails the job with a reason, a database outage leaves it leased."""
    with LeaseWatch(job, settings, worker_stopping) as watch:
        try:
            train_and_write(job, worker_id, settings, watch)
        except OperationalError:
            # The database is gone: nothing can be written now; the lease lapses and the sweeper re-queues the job.
            log.exception("fine-tuning job %s: database unavailable; left to the sweeper", job.id)
        except Exception as exc:
            if not isinstance(exc, TrainingDataError):
                log.exception("fine-tuning job %s failed", job.id)
            with session_scope() as session:
                finish_failed(session, job=job, error=error_for(exc))


def run_fine_tuning_queue(*, queue: str, worker_id: str, settings: WorkerSettings,
                          worker_stopping: Callable[[], bool]) -> int:
    """A train-queue doorbell: claims and trains one job, then rings again if others wait; returns 0 or 1."""
    get_pipeline()  # loaded before claiming, so loading never eats into a lease
    with session_scope() as session:
        job = claim_fine_tuning_job(session, queue=queue, worker_id=worker_id, lease_seconds=settings.lease_seconds)
    if job is None:
        return 0
    log.info("fine-tuning job %s claimed (attempt %d, lease %s)", job.id, job.attempts, job.lease_token)
    run_claimed(job, worker_id, settings, worker_stopping)
    with session_scope() as session:
        more = fine_tuning_queue_has_work(session, queue=queue)
    if more and not worker_stopping():
        ring(queue, reason="continue")  # one training job per message: the broker shares the rest among workers
    return 1
