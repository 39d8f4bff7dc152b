"""The worker's fill wait on the real ledger: it waits for a fuller batch while jobs keep arriving, not otherwise."""
from __future__ import annotations

import threading
import time
import uuid

from db.queries import claim_batch
from queued_jobs import enqueue_captions
from sql_statements import statements_sent
from workers.config import WorkerSettings


def _settings(**values) -> WorkerSettings:
    return WorkerSettings(**{"batch_size": 8, "batch_fill_wait_seconds": 3.0, "batch_fill_poll_seconds": 0.05, **values})


def test_a_lone_job_is_not_held_for_the_whole_window(ledger_env, session_factory, tenant):
    from workers.tasks import wait_for_fill

    queue = f"fill-{uuid.uuid4().hex[:8]}"  # no worker serves it
    enqueue_captions(session_factory, tenant, queue, 1)
    started = time.monotonic()
    assert wait_for_fill(queue=queue, settings=_settings()) == 1
    assert time.monotonic() - started < 1.5  # one poll saw no new job; the 3 s window was not used up


def queue_counts_sent():
    """The count statements this process sends to the ledger inside the block."""
    return statements_sent(lambda statement: "count(" in statement.lower())


def test_a_job_queued_a_poll_ago_is_counted_once_and_not_slept_on(ledger_env, session_factory, tenant):
    # A lone job's doorbell reaches the worker milliseconds after the job was queued: if the queue's newest job
    # has already waited a poll interval, the queue has stopped growing and a second poll would only add latency.
    from workers.tasks import wait_for_fill

    queue = f"fill-{uuid.uuid4().hex[:8]}"
    enqueue_captions(session_factory, tenant, queue, 1)
    time.sleep(0.06)  # longer than the 50 ms poll
    with queue_counts_sent() as counts:
        assert wait_for_fill(queue=queue, settings=_settings()) == 1
    assert len(counts) == 1  # a poll interval is slept only before a further count: none was


def test_a_job_queued_just_now_is_polled_again(ledger_env, session_factory, tenant):
    from workers.tasks import wait_for_fill

    queue = f"fill-{uuid.uuid4().hex[:8]}"
    enqueue_captions(session_factory, tenant, queue, 1)
    with queue_counts_sent() as counts:
        assert wait_for_fill(queue=queue, settings=_settings(batch_fill_poll_seconds=0.5)) == 1
    assert len(counts) == 2  # it may be the first of a stream: one more poll before the claim


def test_an_empty_or_full_queue_does_not_wait(ledger_env, session_factory, tenant):
    from workers.tasks import wait_for_fill

    queue = f"fill-{uuid.uuid4().hex[:8]}"
    started = time.monotonic()
    assert wait_for_fill(queue=queue, settings=_settings()) == 0
    enqueue_captions(session_factory, tenant, queue, 10)
    assert wait_for_fill(queue=queue, settings=_settings()) == 8  # counted up to one batch
    assert time.monotonic() - started < 1.5


def test_jobs_arriving_one_by_one_are_claimed_as_one_full_batch(ledger_env, session_factory, tenant):
    from workers.tasks import wait_for_fill

    queue = f"fill-{uuid.uuid4().hex[:8]}"
    enqueue_captions(session_factory, tenant, queue, 1)

    def trickle() -> None:  # a client submitting a job every 20 ms, faster than the 50 ms poll
        for index in range(1, 10):
            time.sleep(0.02)
            enqueue_captions(session_factory, tenant, queue, 1, start=index)

    sender = threading.Thread(target=trickle)
    sender.start()
    try:
        waiting = wait_for_fill(queue=queue, settings=_settings())
    finally:
        sender.join()
    assert waiting == 8
    with session_factory.begin() as session:
        claim = claim_batch(session, queue=queue, worker_id="test", limit=8, lease_seconds=30)
    assert len(claim.jobs) == 8


def test_a_ring_on_an_empty_queue_ends_at_its_count_without_a_claim(ledger_env, session_factory, tenant):
    # Single submissions ring every few milliseconds, so most rings of a burst find their jobs claimed: such a ring
    # costs one count, not a count and a claim (on SQLite a claim takes the write lock the API is waiting for).
    from workers.tasks import claim_ready_batch

    queue = f"fill-{uuid.uuid4().hex[:8]}"
    with statements_sent() as statements:
        assert claim_ready_batch(queue=queue, worker_id="test", settings=_settings(), pipeline=None) is None
        empty = list(statements)
        enqueue_captions(session_factory, tenant, queue, 2)
        statements.clear()
        batch = claim_ready_batch(queue=queue, worker_id="test", settings=_settings(), pipeline=None)
    assert empty and not any("FOR UPDATE" in s or s.lstrip().upper().startswith("UPDATE") for s in empty)
    assert batch is not None and batch.size == 2  # with jobs queued the same call claims them
    batch.keeper.stop()
    assert any("FOR UPDATE" in s for s in statements)
