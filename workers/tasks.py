"""The doorbell task: claim a batch of a queue from the ledger, run it, write the results; repeat a few times."""
from __future__ import annotations

import functools
import gc
import logging
import os
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from celery import signals
from sqlalchemy.exc import OperationalError

from db.models import utcnow
from db.queries import (
    Claim,
    JobOutcome,
    QueueDepth,
    claim_batch,
    count_queued,
    hand_back_claim,
    queue_has_work,
    write_results,
)
from db.session import session_scope
from db.structured_logs import bind_log_context, log_scope
from workers import worker_logs  # noqa: F401  (JSON log lines when LENSQ_LOG_FORMAT=json)
from workers.batch_runner import CallBudget, DecodedImages, decode_all, encode_ahead, run_batch
from workers.celery_app import PENDING_RINGS, RUN_QUEUE_TASK, app, ring_unless_pending
from workers.config import WorkerSettings, current_settings, train_queue
from workers.fine_tuning import run_fine_tuning_queue
from workers.leases import LeaseKeeper
from workers.metrics import record_claim, record_results
from workers.model import get_pipeline
from workers.sweeper import Sweeper
from workers.webhook_delivery import start_deliverer, stop_deliverer, wake_deliverer

log = logging.getLogger(__name__)
_sweeper: Sweeper | None = None
# Set by a shutdown signal (SIGTERM: Celery's warm shutdown): finish the batch in flight, claim no other.
_stopping = False


def wait_for_fill(*, queue: str, settings: WorkerSettings) -> int:
    """Waits (at most batch_fill_wait_seconds) while the queue is short of a batch and still growing.

    Jobs submitted one by one arrive milliseconds apart: a short wait turns a stream of batches of one into a
    few full batches. The queue has stopped growing once a poll sees no new job, or once its newest job has waited
    a poll interval already: a lone job, which its doorbell brings here milliseconds after its commit, is claimed
    at the first count instead of after a sleep and a second one."""
    deadline = time.monotonic() + settings.batch_fill_wait_seconds
    seen = -1
    while True:
        with session_scope() as session:
            depth = count_queued(session, queue=queue, limit=settings.batch_size)
        waiting = depth.waiting
        if (waiting in (0, seen) or waiting >= settings.batch_size or time.monotonic() >= deadline
                or _queued_a_poll_ago(depth, settings)):
            return waiting
        seen = waiting
        time.sleep(settings.batch_fill_poll_seconds)


def _queued_a_poll_ago(depth: QueueDepth, settings: WorkerSettings) -> bool:
    """Whether the newest waiting job was queued at least one poll interval ago (by the API's clock against this
    one's: a skew only makes the wait one poll longer or shorter, as before this check)."""
    newest = depth.newest_queued_at
    return newest is not None and (utcnow() - newest).total_seconds() >= settings.batch_fill_poll_seconds


@dataclass
class ReadyBatch:
    """A claimed batch whose images are decoded, its lease kept alive from the claim until it has run."""

    queue: str
    claim: Claim
    decoded: DecodedImages
    keeper: LeaseKeeper

    @property
    def size(self) -> int:
        return len(self.claim.jobs)


def claim_ready_batch(*, queue: str, worker_id: str, settings: WorkerSettings, pipeline: Any,
                      encode: bool = False) -> ReadyBatch | None:
    """Claims a batch and decodes its images; None when the queue is empty. With `encode` (a batch claimed
    ahead, on the claim-ahead thread), its images also go through the vision tower here (encode_ahead)."""
    if settings.batch_fill_wait_seconds > 0 and wait_for_fill(queue=queue, settings=settings) == 0:
        # Nothing queued: no claim (on SQLite it would take the write lock). A job committed after this count
        # is rung for after its commit, so the ring that finds it is still to come. Most rings of a stream of
        # single submissions end here: their jobs were claimed in batches with earlier ones.
        return None
    with session_scope() as session:
        claim = claim_batch(session, queue=queue, worker_id=worker_id, limit=settings.batch_size,
                            lease_seconds=settings.lease_seconds)
    if not claim.jobs:
        return None
    keeper = LeaseKeeper(lease_token=claim.lease_token, lease_seconds=settings.lease_seconds).start()
    record_claim(queue, claim.jobs, settings)
    try:
        decoded = decode_all(pipeline, claim.jobs)
        if encode:
            encode_ahead(pipeline, claim.jobs, decoded, CallBudget.from_settings(settings))
    except BaseException:
        keeper.stop()  # the lease lapses and the sweeper re-queues the jobs
        raise
    return ReadyBatch(queue=queue, claim=claim, decoded=decoded, keeper=keeper)


def run_model(batch: ReadyBatch, *, pipeline: Any, settings: WorkerSettings) -> list[JobOutcome]:
    """Runs a ready batch through the model (on this, the model's thread)."""
    bind_log_context(lease=batch.claim.lease_token)  # every line about this batch names its lease
    try:
        return run_batch(pipeline, batch.claim.jobs, CallBudget.from_settings(settings), decoded=batch.decoded)
    finally:
        batch.keeper.stop()


def write_outcomes(batch: ReadyBatch, outcomes: list[JobOutcome], *, settings: WorkerSettings) -> None:
    """Writes a batch's results under its lease: only jobs still running under it take theirs."""
    claim = batch.claim
    # Its own log scope: this runs on the claim-ahead thread, which does not share the message's context.
    with log_scope(queue=batch.queue, lease=claim.lease_token):
        with session_scope() as session:
            written = write_results(session, lease_token=claim.lease_token, outcomes=outcomes)
        wake_deliverer()  # the results' webhook events are committed: send them now rather than at the next poll
        record_results(batch.queue, claim.jobs, outcomes, written, settings)
        # The chaos suite counts these lines: every write and every late result refused.
        log.info("lease %s: wrote %d results, discarded %d", claim.lease_token, written, len(outcomes) - written)
        if written < len(outcomes):
            log.warning("%d of %d results discarded: their lease was lost or the job cancelled",
                        len(outcomes) - written, len(outcomes))


def hand_back(batch: ReadyBatch | None) -> None:
    """A batch claimed ahead that will not run here goes back to the queue (if that fails, its lease lapses)."""
    if batch is None:
        return
    batch.keeper.stop()
    try:
        with session_scope() as session:
            returned = hand_back_claim(session, lease_token=batch.claim.lease_token)
        log.info("lease %s: handed %d jobs back to the queue", batch.claim.lease_token, returned)
    except Exception:
        log.exception("could not hand back lease %s; the sweeper re-queues it when it lapses", batch.claim.lease_token)


@functools.cache
def claim_ahead_pool() -> ThreadPoolExecutor:
    """One thread that claims and decodes the next batch while the model runs the current one."""
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="claim-ahead")


def _should_stop_claiming(started: float, settings: WorkerSettings) -> bool:
    """Whether this message should claim no further batch: the worker is stopping or the message ran long."""
    return _stopping or time.monotonic() - started > settings.message_soft_time_limit_seconds


def _claims_ahead(batch: ReadyBatch, number: int, started: float, settings: WorkerSettings) -> bool:
    """Whether to claim the next batch while this one runs: only under a backlog (this claim was full, so the
    queue may hold more), and only if this message will run another batch."""
    return (settings.claim_ahead and batch.size >= settings.batch_size
            and number < settings.max_batches_per_message and not _should_stop_claiming(started, settings))


def drain_queue(*, queue: str, worker_id: str, settings: WorkerSettings) -> int:
    """Runs batches until the queue is empty or this message's share is used, then rings again if work is left.

    Only the model runs on this thread. Under a backlog the next batch is claimed and decoded on another thread
    (claim_ahead_pool), its images encoded there too (settings.encode_ahead), while the model runs the current
    one; and each batch's results are written there, while the model runs the next: at most one write is in
    flight, and the message ends only once it is done. A worker told to stop hands back the batch it claimed
    ahead."""
    pipeline = get_pipeline()  # loaded before claiming, so loading never eats into a lease
    claim_next = functools.partial(claim_ready_batch, queue=queue, worker_id=worker_id, settings=settings,
                                   pipeline=pipeline)
    started = time.monotonic()
    claimed = 0
    ahead: Future | None = None
    writing: Future | None = None
    drained = False  # a claim found the queue empty
    try:
        batch = claim_next()
        for number in range(1, settings.max_batches_per_message + 1):
            if batch is None:
                drained = True
                break
            claimed += batch.size
            if _claims_ahead(batch, number, started, settings):
                ahead = claim_ahead_pool().submit(claim_next, encode=settings.encode_ahead)
            outcomes = run_model(batch, pipeline=pipeline, settings=settings)
            if writing is not None:
                writing.result()  # the previous batch's write failed (the ledger is down?): stop here
            writing = claim_ahead_pool().submit(write_outcomes, batch, outcomes, settings=settings)
            if ahead is not None:
                batch, ahead = ahead.result(), None
            elif number < settings.max_batches_per_message and not _should_stop_claiming(started, settings):
                batch = claim_next()
            else:
                batch = None
            if _should_stop_claiming(started, settings):
                hand_back(batch)
                break
    finally:
        if ahead is not None:  # a batch failed (the ledger is down?): the one claimed ahead goes back
            hand_back(_result_or_none(ahead))
        if writing is not None:
            writing.result()  # raises the write's error, if any
    if drained:
        return claimed
    with session_scope() as session:
        more = queue_has_work(session, queue=queue)
    if more:  # let the broker share the rest fairly among workers and queues (a ring waiting there already does)
        ring_unless_pending(queue, reason="continue")
    return claimed


def _result_or_none(future: Future) -> ReadyBatch | None:
    try:
        return future.result()
    except Exception:
        return None  # its claim failed: there is nothing to hand back


@app.task(name=RUN_QUEUE_TASK, bind=True, ignore_result=True)
def run_queue(self, queue: str, reason: str = "submitted") -> int:
    """A doorbell: whatever is queued on `queue` gets claimed; a stale or duplicate ring claims nothing."""
    worker_id = f"{self.request.hostname or 'worker'}/{os.getpid()}"
    PENDING_RINGS.answered(queue)  # before the queue is read: any job committed from now on rings again
    settings = current_settings()
    try:
        with log_scope(queue=queue):  # this message's lines name its queue, and each batch's its lease
            if queue == train_queue(settings):  # fine-tuning: one training job per ring, not the batch loop
                claimed = run_fine_tuning_queue(queue=queue, worker_id=worker_id, settings=settings,
                                                worker_stopping=lambda: _stopping)
            else:
                claimed = drain_queue(queue=queue, worker_id=worker_id, settings=settings)
    except OperationalError as exc:
        # Nothing is lost: queued jobs stay queued and are rung again by the sweeper; a batch whose results could
        # not be written keeps its lease until it lapses, then the sweeper re-queues it.
        log.warning("%s: database unavailable (%s); leaving the queue to the sweeper", queue,
                    next(iter(str(exc).splitlines()), "")[:200])
        return 0
    log.info("%s (%s): %d jobs", queue, reason, claimed)
    return claimed


@signals.worker_process_init.connect
def load_model(**_kwargs) -> None:
    """Loads the model before the worker says it is ready: a ready worker serves its first message at once.

    Importing torch alone can take tens of seconds on a busy machine; paid here, it never delays a job or a
    recovery, and a worker whose checkpoint is broken shows it at start (get_pipeline tries again on demand).

    Then the objects of start-up (torch, transformers, the model: about 560,000) leave the garbage collector's
    view for good (gc.freeze): a full collection that walked them all took about 200 ms, in which the model's
    thread stood still, every batch in flight with it; it now walks only what was allocated since."""
    get_pipeline()
    gc.freeze()


@signals.worker_ready.connect
def start_sweeper(**_kwargs) -> None:
    """Each worker runs its own sweeper thread: any live worker recovers a dead one's jobs."""
    global _sweeper
    _sweeper = Sweeper(WorkerSettings())
    _sweeper.start()
    start_deliverer(WorkerSettings())  # webhook events, beside the sweeper: any live worker delivers them


@signals.worker_shutting_down.connect
def stop_claiming(**_kwargs) -> None:
    """Sent from the signal handler: the batch in flight finishes and is written, the rest is rung for others."""
    global _stopping
    _stopping = True


@signals.worker_shutdown.connect
def stop_sweeper(**_kwargs) -> None:
    if _sweeper is not None:
        _sweeper.stop()
    stop_deliverer()
