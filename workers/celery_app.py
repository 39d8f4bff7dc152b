"""The Celery app, torch-free: the API imports it to ring workers; workers run workers.tasks on it."""
from __future__ import annotations

import math

from celery import Celery
from kombu import Queue

from workers.config import WorkerSettings, all_queues, message_time_limit, queue_for_task

__all__ = ["SETTINGS", "app", "all_queues", "queue_for_task", "ring", "ring_for_new_jobs", "RUN_QUEUE_TASK"]

RUN_QUEUE_TASK = "workers.tasks.run_queue"


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


# Read once per process: the API rings (and names queues) on every submission, so no settings are parsed per request.
SETTINGS = WorkerSettings()
app = make_celery(SETTINGS)


def ring(queue: str, *, reason: str = "submitted") -> None:
    """Sends one doorbell on `queue`: some worker will claim whatever is queued there."""
    app.send_task(
        RUN_QUEUE_TASK, args=[queue], kwargs={"reason": reason}, queue=queue,
        retry=True, retry_policy={"max_retries": 2, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5},
    )


def ring_for_new_jobs(queue_counts: dict[str, int], *, max_rings_per_queue: int = 16) -> None:
    """Rings each queue once per batch's worth of new jobs (capped), so idle workers all wake."""
    batch_size = SETTINGS.batch_size
    for queue, count in queue_counts.items():
        for _ in range(min(max_rings_per_queue, max(1, math.ceil(count / batch_size)))):
            ring(queue)
