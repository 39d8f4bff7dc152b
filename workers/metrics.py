"""Prometheus metrics of a worker process (jobs, batches, model calls, leases) and the HTTP server that serves them."""
from __future__ import annotations

import logging
import os
import time
from collections import Counter as Tally
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from celery import signals
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.multiprocess import MultiProcessCollector

from db.ledger_metrics import BATCH_SIZE_BUCKETS, LedgerCollector
from db.queries import ClaimedJob, JobOutcome
from db.session import get_session_factory
from workers.config import TASK_KINDS, WorkerSettings, queue_for_task

log = logging.getLogger(__name__)

WORKER_REGISTRY = CollectorRegistry()
JOBS = Counter("lensq_worker_jobs", "Results this worker produced, by task, outcome (succeeded, failed) and error code",
               ["task", "outcome", "error_code"], registry=WORKER_REGISTRY)
BATCH_SIZE = Histogram("lensq_worker_batch_size", "Jobs per claimed batch, by task", ["task"],
                       buckets=BATCH_SIZE_BUCKETS, registry=WORKER_REGISTRY)
MODEL_CALL_SECONDS = Histogram("lensq_worker_model_call_seconds", "Time of one model call (a batched call, or one "
                               "job alone), by task", ["task"], registry=WORKER_REGISTRY,
                               buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600))
RETRIES = Counter("lensq_worker_retries", "Jobs claimed again after an earlier attempt lost its lease (attempts > 1)",
                  ["task"], registry=WORKER_REGISTRY)
RESULTS_DISCARDED = Counter("lensq_worker_results_discarded", "Results not written: the lease was lost or the job "
                            "cancelled meanwhile", ["task"], registry=WORKER_REGISTRY)
LEASE_EXPIRIES = Counter("lensq_worker_lease_expiries", "Expired leases this worker's sweeper re-queued, by task",
                         ["task"], registry=WORKER_REGISTRY)
IMAGES_ENCODED_AHEAD = Counter("lensq_worker_images_encoded_ahead", "Images whose embeddings the claim-ahead thread "
                               "readied in the cache (encoded there, unless cached already) while the model's thread "
                               "ran the batch before", ["task"], registry=WORKER_REGISTRY)
JOBS_DEAD = Counter("lensq_worker_jobs_dead", "Jobs this worker's sweeper failed after max_attempts lost leases",
                    registry=WORKER_REGISTRY)


def task_of_queue(queue: str, settings: WorkerSettings) -> str:
    """The task a queue serves ('lensq.caption' → 'caption')."""
    by_queue = {queue_for_task(task, settings): task for task in TASK_KINDS}
    return by_queue.get(queue, queue.rpartition(".")[2])


def record_claim(queue: str, jobs: Sequence[ClaimedJob], settings: WorkerSettings) -> None:
    """A claimed batch: its size, and how many of its jobs are re-executions."""
    if not jobs:
        return
    BATCH_SIZE.labels(task_of_queue(queue, settings)).observe(len(jobs))
    for task, count in Tally(job.task for job in jobs if job.attempts > 1).items():
        RETRIES.labels(task).inc(count)


def record_results(queue: str, jobs: Sequence[ClaimedJob], outcomes: Sequence[JobOutcome], written: int,
                   settings: WorkerSettings) -> None:
    """The batch's outcomes by task and error code, and how many were discarded instead of written."""
    tasks = {job.id: job.task for job in jobs}
    for outcome in outcomes:
        failed = outcome.error is not None
        code = (outcome.error_code or "model") if failed else ""
        JOBS.labels(tasks.get(outcome.job_id, "unknown"), "failed" if failed else "succeeded", code).inc()
    if written < len(outcomes):
        RESULTS_DISCARDED.labels(task_of_queue(queue, settings)).inc(len(outcomes) - written)


@contextmanager
def timed_model_call(task: str) -> Iterator[None]:
    """Observes one model call's duration, whether it returned, raised or timed out."""
    started = time.perf_counter()
    try:
        yield
    finally:
        MODEL_CALL_SECONDS.labels(task).observe(time.perf_counter() - started)


def record_sweep(requeued: dict[str, int], failed: int, settings: WorkerSettings) -> None:
    """One sweep: expired leases re-queued (by the queue's task) and jobs failed as dead."""
    for queue, count in requeued.items():
        LEASE_EXPIRIES.labels(task_of_queue(queue, settings)).inc(count)
    if failed:
        JOBS_DEAD.inc(failed)


def metrics_registry(settings: WorkerSettings) -> CollectorRegistry:
    """What the endpoint serves: this process's series (every process's under PROMETHEUS_MULTIPROC_DIR, for a
    prefork pool), then the ledger's queue depth read at scrape time."""
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        MultiProcessCollector(registry)
    else:
        registry.register(WORKER_REGISTRY)
    registry.register(LedgerCollector(get_session_factory(), totals=False, cache_seconds=0, timeout_seconds=5))
    return registry


@signals.worker_ready.connect
def serve_metrics(**_kwargs) -> None:
    """Starts the metrics endpoint when LENSQ_METRICS_PORT is set; a port in use is logged, never fatal."""
    settings = WorkerSettings()
    if not settings.metrics_port:
        return
    try:
        start_http_server(settings.metrics_port, addr=settings.metrics_host, registry=metrics_registry(settings))
    except OSError as exc:
        log.warning("metrics endpoint not started on %s:%d: %s", settings.metrics_host, settings.metrics_port, exc)
        return
    log.info("metrics on http://%s:%d/metrics", settings.metrics_host, settings.metrics_port)
