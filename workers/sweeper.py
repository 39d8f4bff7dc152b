"""The sweeper: re-queues expired leases, fails jobs after max_attempts, re-rings queues whose message was lost."""
from __future__ import annotations

import logging
import random
import threading

from sqlalchemy.exc import OperationalError

from db.fine_tuning_runs import stale_fine_tuning_queues
from db.queries import SweepReport, queues_to_rering, requeue_expired
from db.session import session_scope
from workers.celery_app import all_queues, ring
from workers.config import WorkerSettings
from workers.metrics import record_sweep

log = logging.getLogger(__name__)


def sweep_once(settings: WorkerSettings) -> tuple[SweepReport, list[str]]:
    """One pass: returns what was re-queued or failed, and the queues rung."""
    with session_scope() as session:
        report = requeue_expired(session)
    record_sweep(report.requeued, report.failed, settings)  # counted once committed
    with session_scope() as session:
        stale = queues_to_rering(session, queues=all_queues(settings), stale_seconds=settings.stale_queued_seconds)
        stale += stale_fine_tuning_queues(session, stale_seconds=settings.fine_tune_stale_queued_seconds)
    rung = sorted(set(report.requeued) | set(stale))
    for queue in rung:
        ring(queue, reason="sweeper")
    if report.requeued or report.failed or rung:
        log.info("sweeper: requeued %s, failed %d, rang %s", report.requeued, report.failed, rung)
    return report, rung


class Sweeper(threading.Thread):
    """A daemon thread in each worker that sweeps every few seconds (with jitter) until stopped."""

    def __init__(self, settings: WorkerSettings):
        super().__init__(name="lensq-sweeper", daemon=True)
        self.settings = settings
        self.stopped = threading.Event()

    def run(self) -> None:
        interval = self.settings.sweep_interval_seconds
        while not self.stopped.wait(interval * random.uniform(0.8, 1.2)):
            try:
                sweep_once(self.settings)
            except OperationalError as exc:  # the database is down or restarting: expected, no traceback
                log.warning("sweep failed, database unavailable (%s); trying again in %.1fs",
                            next(iter(str(exc).splitlines()), "")[:200], interval)
            except Exception:
                log.exception("sweep failed; trying again in %.1fs", interval)

    def stop(self) -> None:
        self.stopped.set()
