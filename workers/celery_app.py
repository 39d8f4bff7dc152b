"""The Celery app, torch-free: the API imports it to ring workers; workers run workers.tasks on it."""
from __future__ import annotations

import logging
import math

import redis
from celery import Celery
from kombu import Queue

from workers.config import WorkerSettings, all_queues, message_time_limit, queue_for_task

__all__ = ["PENDING_RINGS", "SETTINGS", "app", "all_queues", "queue_for_task", "ring", "ring_for_new_jobs",
           "ring_unless_pending", "RUN_QUEUE_TASK"]

RUN_QUEUE_TASK = "workers.tasks.run_queue"
log = logging.getLogger(__name__)


def _transport_options(settings: WorkerSettings) -> dict:
    """Redis redelivers an unacked message after the visibility timeout; SQLAlchemy's transport takes no such option."""
    if settings.broker_url.startswith(("redis://", "rediss://")):
        return {"visibility_timeout": settings.visibility_timeout_seconds}
    return {}


def make_celery(settings: WorkerSettings | None = None) -> Celery:
    """A Celery app configured for doorbell messages: late acks, one message at a time, a queue per task."""
    settings = settings or WorkerSettings()
    app = Celery("lensq", broker=settings.broker_url, include=["workers.tasks"])
    app.conf.update(
        task_queues=[Queue(name) for name in all_queues(settings)],
        task_default_queue=all_queues(settings)[0],
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        timezone="UTC",
        broker_connection_retry_on_startup=True,
        broker_transport_options=_transport_options(settings),
        **delivery_settings(settings),
    )
    return app


def delivery_settings(settings: WorkerSettings) -> dict:
    """How messages are acked, limited and handed back; each value says why."""
    hard_limit = message_time_limit(settings)
    return dict(
        # Ack a doorbell only when its batches are written: a worker that dies mid-batch leaves it in the broker.
        task_acks_late=True,
        # A worker process killed under a message (OOM, SIGKILL) hands the message back instead of acking it.
        task_reject_on_worker_lost=True,
        # One unacked message per process: a busy worker never sits on a doorbell an idle one could answer.
        worker_prefetch_multiplier=1,
        # One process per GPU, the model loaded once in it. CUDA cannot be used in a forked child of a process
        # that touched it, so the default pool is solo (the task runs in the worker's main thread), not prefork.
        worker_pool="solo",
        worker_concurrency=1,
        # Below the visibility timeout, so the broker never redelivers a message whose first run is still going.
        # The solo pool does not enforce Celery's limits: the drain loop (soft limit: no new batch after it) and
        # workers.time_limits (every model call) keep a message under them by construction.
        task_soft_time_limit=settings.message_soft_time_limit_seconds,
        task_time_limit=hard_limit,
        # A message unacked when the broker connection drops is redelivered, so a running copy is cancelled
        # rather than run twice (Celery 6's default). Under the solo pool the task has returned before the loss is
        # seen; either way a duplicate doorbell claims nothing, as the ledger hands each job to one lease.
        worker_cancel_long_running_tasks_on_connection_loss=True,
        # SIGTERM stays Celery's warm shutdown: workers.tasks stops claiming after the batch in flight, writes it
        # and rings its queue, so the rest goes to the other workers at once. Celery's soft shutdown applies only to
        # a cold one (SIGQUIT, or SIGTERM with REMAP_SIGTERM=SIGQUIT), and under the solo pool its wait runs in the
        # signal handler on the thread that runs the task: the batch freezes for the whole wait, then is aborted
        # (the solo pool cannot cancel a task). So it is 0 by default; set LENSQ_SOFT_SHUTDOWN_SECONDS only for a
        # prefork worker, whose child runs on during the wait. Either way an aborted batch's leases lapse and the
        # sweeper re-queues its jobs.
        worker_soft_shutdown_timeout=settings.soft_shutdown_seconds,
        # Only a message in flight is worth waiting for: with prefetch 1 an idle worker holds nothing to hand back.
        worker_enable_soft_shutdown_on_idle=False,
    )


# A doorbell still waiting in the broker will wake a worker that claims every job committed before it starts: rings
# sent meanwhile on the same queue only add messages that find their jobs claimed (each costs a worker about 1 ms
# of its model's thread, and API processes each sent up to 100 a second per queue). A count of waiting rings lapses
# this long after the first of them was sent, so a ring that is lost (Redis flushed, a worker killed before it
# answered) holds back the next ones no longer than that; the sweeper re-rings what stays queued in any case.
PENDING_RING_SECONDS = 1.0


class PendingRings:
    """The doorbells of each queue that no worker has taken yet, counted in the broker's Redis beside its messages
    (flushed with them). With another broker transport nothing is counted and every ring is sent."""

    _RESERVE = """
    local pending = tonumber(redis.call('GET', KEYS[1]) or '0')
    local send = tonumber(ARGV[1]) - pending
    if send <= 0 then return 0 end
    if pending == 0 then redis.call('SET', KEYS[1], send, 'PX', ARGV[2]) else redis.call('INCRBY', KEYS[1], send) end
    return send
    """
    _ANSWER = """
    if tonumber(redis.call('GET', KEYS[1]) or '0') > 0 then redis.call('DECR', KEYS[1]) end
    """

    def __init__(self, broker_url: str, lapse_seconds: float = PENDING_RING_SECONDS):
        self.lapse_ms = int(lapse_seconds * 1000)
        self.client = redis.Redis.from_url(broker_url) if broker_url.startswith(("redis://", "rediss://")) else None
        if self.client is not None:
            self.reserve_script = self.client.register_script(self._RESERVE)
            self.answer_script = self.client.register_script(self._ANSWER)

    @staticmethod
    def key(queue: str) -> str:
        return f"{queue}:pending-rings"

    def reserve(self, queue: str, wanted: int) -> int:
        """How many of `wanted` rings to send on `queue`: those beyond the rings still waiting there, now counted as
        waiting too. If Redis cannot say, all of them (the send will tell whether the broker is up)."""
        if self.client is None:
            return wanted
        try:
            return int(self.reserve_script(keys=[self.key(queue)], args=[wanted, self.lapse_ms]))
        except redis.RedisError:
            return wanted

    def answered(self, queue: str) -> None:
        """A worker took one of the queue's rings, before it looks at the queue: a job committed after this rings
        again. A failure only leaves the count to lapse."""
        if self.client is None:
            return
        try:
            self.answer_script(keys=[self.key(queue)])
        except redis.RedisError as exc:
            log.warning("could not count a ring on %s as answered (%s); the count lapses by itself", queue, exc)


# Read once per process: the API rings (and names queues) on every submission, so no settings are parsed per request.
SETTINGS = WorkerSettings()
app = make_celery(SETTINGS)
PENDING_RINGS = PendingRings(SETTINGS.broker_url)


def ring(queue: str, *, reason: str = "submitted") -> None:
    """Sends one doorbell on `queue`: some worker will claim whatever is queued there."""
    app.send_task(
        RUN_QUEUE_TASK, args=[queue], kwargs={"reason": reason}, queue=queue,
        retry=True, retry_policy={"max_retries": 2, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5},
    )


def ring_unless_pending(queue: str, *, reason: str, wanted: int = 1) -> None:
    """Rings `queue` `wanted` times, less the rings of it that still wait for a worker (PendingRings)."""
    for _ in range(PENDING_RINGS.reserve(queue, wanted)):
        ring(queue, reason=reason)


def ring_for_new_jobs(queue_counts: dict[str, int], *, max_rings_per_queue: int = 16) -> None:
    """Rings each queue once per batch's worth of new jobs (capped), so idle workers all wake; the rings still
    waiting in the broker count towards that number (PendingRings)."""
    batch_size = SETTINGS.batch_size
    for queue, count in queue_counts.items():
        ring_unless_pending(queue, reason="submitted",
                            wanted=min(max_rings_per_queue, max(1, math.ceil(count / batch_size))))
