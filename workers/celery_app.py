"""The Celery app, torch-free: the API imports it to ring workers; workers run workers.tasks on it."""
from __future__ import annotations

import math

from celery import Celery
from kombu import Queue

from workers.config import WorkerSettings, all_queues, queue_for_task

__all__ = ["app", "all_queues", "queue_for_task", "ring", "ring_for_new_jobs", "RUN_QUEUE_TASK"]

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
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_ignore_result=True,
        worker_prefetch_multiplier=1,
        broker_connection_retry_on_startup=True,
        broker_transport_options=_transport_options(settings),
        task_serializer="json",
        accept_content=["json"],
        timezone="UTC",
    )
    return app


app = make_celery()


def ring(queue: str, *, reason: str = "submitted") -> None:
    """Sends one doorbell on `queue`: some worker will claim whatever is queued there."""
    app.send_task(
        RUN_QUEUE_TASK, args=[queue], kwargs={"reason": reason}, queue=queue,
        retry=True, retry_policy={"max_retries": 2, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5},
    )


def ring_for_new_jobs(queue_counts: dict[str, int], *, max_rings_per_queue: int = 16) -> None:
    """Rings each queue once per batch's worth of new jobs (capped), so idle workers all wake."""
    batch_size = WorkerSettings().batch_size
    for queue, count in queue_counts.items():
        for _ in range(min(max_rings_per_queue, max(1, math.ceil(count / batch_size)))):
            ring(queue)
