"""A Prometheus collector reading the ledger at scrape time: queue depth per task, finished jobs, batch sizes.

Both the API's /metrics and each worker's endpoint register it (db is the package they share), so the two agree
on names and buckets."""
from __future__ import annotations

import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from db.ledger_stats import LedgerTotals, QueueStats, ledger_totals, limit_statement_time, queue_stats
from db.models import FINAL_STATUSES, Task

log = logging.getLogger(__name__)

# Jobs per claimed batch: powers of two up to the largest LENSQ_BATCH_SIZE a worker accepts.
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
TASKS = tuple(task.value for task in Task)


def queue_families(stats: list[QueueStats]) -> Iterator[Metric]:
    """Queue depth, running jobs and the oldest waiting job's age, one sample per task (0 when idle)."""
    depth = GaugeMetricFamily("lensq_queue_depth", "Jobs waiting in the ledger, by task", labels=["task"])
    running = GaugeMetricFamily("lensq_jobs_running", "Jobs leased to a worker now, by task", labels=["task"])
    oldest = GaugeMetricFamily("lensq_queue_oldest_seconds", "Age of the oldest waiting job, by task", labels=["task"])
    queued_by_task, running_by_task, oldest_by_task = Counter(), Counter(), {}
    for entry in stats:
        queued_by_task[entry.task] += entry.queued
        running_by_task[entry.task] += entry.running
        oldest_by_task[entry.task] = max(oldest_by_task.get(entry.task, 0.0), entry.oldest_queued_seconds)
    for task in sorted(set(TASKS) | set(queued_by_task) | set(running_by_task)):
        depth.add_metric([task], queued_by_task[task])
        running.add_metric([task], running_by_task[task])
        oldest.add_metric([task], oldest_by_task.get(task, 0.0))
    yield from (depth, running, oldest)


def batch_size_family(sizes: dict[tuple[str, int], int]) -> HistogramMetricFamily:
    """A histogram of written batches' sizes, by task, rebuilt from the ledger."""
    family = HistogramMetricFamily("lensq_ledger_batch_size", "Jobs per written batch (from the ledger's lease "
                                   "tokens), by task", labels=["task"])
    for task in sorted({task for task, _ in sizes}):
        counts = {size: n for (t, size), n in sizes.items() if t == task}
        buckets = [(floatToGoString(le), sum(n for size, n in counts.items() if size <= le))  # le="1.0", as a Histogram
                   for le in BATCH_SIZE_BUCKETS]
        buckets.append(("+Inf", sum(counts.values())))
        family.add_metric([task], buckets, sum_value=sum(size * n for size, n in counts.items()))
    return family


def totals_families(totals: LedgerTotals) -> Iterator[Metric]:
    """Finished jobs by task, status and error code, and the batch-size histogram."""
    finished = CounterMetricFamily("lensq_ledger_jobs_finished", "Jobs in a final status in the ledger, by task, "
                                   "status and error code", labels=["task", "status", "error_code"])
    final = {status.value for status in FINAL_STATUSES}
    for (task, status, code), count in sorted(totals.jobs.items()):
        if status in final:
            finished.add_metric([task, status, code], count)
    yield finished
    yield batch_size_family(totals.batch_sizes)


class LedgerCollector:
    """Queue gauges read on every scrape (cheap: active jobs only); whole-ledger totals cached for `cache_seconds`."""

    def __init__(self, session_factory: Callable[[], Session], *, totals: bool, cache_seconds: float,
                 timeout_seconds: float):
        self.session_factory, self.with_totals = session_factory, totals
        self.cache_seconds, self.timeout_seconds = cache_seconds, timeout_seconds
        self._lock = threading.Lock()  # one scrape refreshes the cache, a concurrent one waits for it
        self._totals: LedgerTotals | None = None
        self._totals_read_at = -math.inf

    def _cached_totals(self, session: Session) -> LedgerTotals:
        if time.monotonic() - self._totals_read_at > self.cache_seconds:
            self._totals = ledger_totals(session)
            self._totals_read_at = time.monotonic()
        return self._totals

    def _read(self) -> tuple[list[QueueStats], LedgerTotals | None]:
        with self._lock, self.session_factory() as session:
            limit_statement_time(session, self.timeout_seconds)
            stats = queue_stats(session)
            totals = self._cached_totals(session) if self.with_totals else None
            session.rollback()
            return stats, totals

    def collect(self) -> Iterator[Metric]:
        started = time.perf_counter()
        up = GaugeMetricFamily("lensq_ledger_up", "1 if this scrape could read the ledger, else 0")
        try:
            stats, totals = self._read()
        except SQLAlchemyError as exc:  # the database is down or slow: the process's own metrics still go out
            log.warning("metrics: could not read the ledger: %s", next(iter(str(exc).splitlines()), "")[:200])
            up.add_metric([], 0)
            yield up
            return
        yield from queue_families(stats)
        if totals is not None:
            yield from totals_families(totals)
        up.add_metric([], 1)
        yield up
        yield GaugeMetricFamily("lensq_ledger_scrape_seconds", "Time this scrape spent reading the ledger",
                                value=time.perf_counter() - started)
