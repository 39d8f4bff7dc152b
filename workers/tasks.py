"""The doorbell task: claim a batch of a queue from the ledger, run it, write the results; repeat a few times."""
from __future__ import annotations

import logging
import os

from celery import signals

from db.queries import claim_batch, queue_has_work, write_results
from db.session import session_scope
from workers.batch_runner import run_batch
from workers.celery_app import RUN_QUEUE_TASK, app, ring
from workers.config import WorkerSettings
from workers.leases import keep_leases_alive
from workers.model import get_pipeline
from workers.sweeper import Sweeper

log = logging.getLogger(__name__)
_sweeper: Sweeper | None = None


def run_one_batch(*, queue: str, worker_id: str, settings: WorkerSettings) -> int:
    """Claims, runs and writes one batch; returns how many jobs it claimed (0: the queue was empty)."""
    pipeline = get_pipeline()  # loaded before claiming, so loading never eats into a lease
    with session_scope() as session:
        claim = claim_batch(session, queue=queue, worker_id=worker_id, limit=settings.batch_size,
                            lease_seconds=settings.lease_seconds)
    if not claim.jobs:
        return 0
    with keep_leases_alive(lease_token=claim.lease_token, lease_seconds=settings.lease_seconds):
        outcomes = run_batch(pipeline, claim.jobs)
    with session_scope() as session:
        written = write_results(session, lease_token=claim.lease_token, outcomes=outcomes)
    if written < len(outcomes):
        log.warning("%d of %d results discarded: their lease was lost or the job cancelled", len(outcomes) - written,
                    len(outcomes))
    return len(claim.jobs)


def drain_queue(*, queue: str, worker_id: str, settings: WorkerSettings) -> int:
    """Runs batches until the queue is empty or this message's share is used, then rings again if work is left."""
    claimed = 0
    for _ in range(settings.max_batches_per_message):
        count = run_one_batch(queue=queue, worker_id=worker_id, settings=settings)
        claimed += count
        if count == 0:
            return claimed
    with session_scope() as session:
        more = queue_has_work(session, queue=queue)
    if more:
        ring(queue, reason="continue")  # let the broker share the rest fairly among workers and queues
    return claimed


@app.task(name=RUN_QUEUE_TASK, bind=True, ignore_result=True)
def run_queue(self, queue: str, reason: str = "submitted") -> int:
    """A doorbell: whatever is queued on `queue` gets claimed; a stale or duplicate ring claims nothing."""
    worker_id = f"{self.request.hostname or 'worker'}/{os.getpid()}"
    claimed = drain_queue(queue=queue, worker_id=worker_id, settings=WorkerSettings())
    log.info("%s (%s): %d jobs", queue, reason, claimed)
    return claimed


@signals.worker_ready.connect
def start_sweeper(**_kwargs) -> None:
    """Each worker runs its own sweeper thread: any live worker recovers a dead one's jobs."""
    global _sweeper
    _sweeper = Sweeper(WorkerSettings())
    _sweeper.start()


@signals.worker_shutdown.connect
def stop_sweeper(**_kwargs) -> None:
    if _sweeper is not None:
        _sweeper.stop()
