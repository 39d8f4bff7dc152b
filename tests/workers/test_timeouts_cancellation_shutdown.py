"""Real workers with fault injection on: a stalled job times out alone, cancellation, and SIGTERM mid-batch."""
from __future__ import annotations

import hashlib
import os
import re
import signal
import uuid

import pytest
from sqlalchemy import select

from db.models import Job
from db.queries import ImageFacts, NewJob, insert_batch, insert_jobs, store_image
from image_factory import shape_png
from polling import wait_for_final, wait_until
from workers.celery_app import RUN_QUEUE_TASK, make_celery
from workers.config import WorkerSettings
from workers.faults import FAULT_PARAM, STALL

PREFIX = "faults"  # a queue prefix of their own: the run's other workers never claim these jobs
JOB_TIME_LIMIT = 4
FAULT_ENV = {
    "LENSQ_QUEUE_PREFIX": PREFIX,
    "LENSQ_FAULT_INJECTION": "1",
    "LENSQ_FAULT_STALL_SECONDS": "120",  # far past the limit: only the time limit can end a stalled call
    "LENSQ_JOB_TIME_LIMIT_SECONDS": str(JOB_TIME_LIMIT),
    "LENSQ_TIME_LIMIT_GRACE_SECONDS": "30",
}
STALLED = {FAULT_PARAM: STALL}


@pytest.fixture(scope="module")
def fault_pool(worker_pool, service_env, tmp_path_factory):
    """Workers of the run's WorkerPool kind, with fault injection on and a short job time limit."""
    pool = type(worker_pool)(env={**service_env, **FAULT_ENV}, log_dir=tmp_path_factory.mktemp("fault-workers"))
    yield pool
    pool.stop_all()


@pytest.fixture
def ring(redis_url):
    app = make_celery(WorkerSettings(broker_url=redis_url, queue_prefix=PREFIX))
    return lambda queue: app.send_task(RUN_QUEUE_TASK, args=[queue], kwargs={"reason": "test"}, queue=queue)


def _exactly(pool, count: int):
    """Exactly `count` live workers in the pool (extra ones are stopped), so a test knows who serves."""
    live = pool.ensure(count)
    for worker in live[count:]:
        pool.workers.remove(worker)
        os.killpg(worker.pid, signal.SIGTERM)
        worker.process.wait(timeout=60)
    return pool.workers


def _seed(session_factory, tenant, params: list[dict], *, seed: int, in_batch: bool = True, priority: int = 0):
    """Caption jobs written straight into the ledger (the only way a job can carry a fault marker)."""
    images = [shape_png(seed + i) for i in range(len(params))]
    facts = [ImageFacts(data=d, sha256=hashlib.sha256(d).hexdigest(), format="PNG", width=64, height=64)
             for d in images]
    with session_factory.begin() as session:
        for image in facts:
            store_image(session, tenant_id=tenant.id, image=image)
        batch = insert_batch(session, tenant_id=tenant.id, total=len(params)) if in_batch else None
        jobs = insert_jobs(session, tenant_id=tenant.id, max_attempts=3, batch_id=batch.id if batch else None, jobs=[
            NewJob(task="caption", queue=f"{PREFIX}.caption", params=p, image_sha256=f.sha256, priority=priority,
                   batch_index=i if batch else None)
            for i, (p, f) in enumerate(zip(params, facts))
        ])
        return (batch.id if batch else None), [job.id for job in jobs]


def _statuses(session_factory, ids):
    with session_factory() as session:
        rows = session.execute(select(Job.id, Job.status).where(Job.id.in_(ids))).all()
    return {job_id: status for job_id, status in rows}


def _log_counts(worker) -> tuple[int, int]:
    """Results this worker wrote and discarded, from its log lines."""
    pairs = re.findall(r"wrote (\d+) results, discarded (\d+)", worker.log_path.read_text(errors="replace"))
    return sum(int(w) for w, _ in pairs), sum(int(d) for _, d in pairs)


@pytest.mark.timeout(240)
def test_a_stalled_job_times_out_alone_and_a_cancelled_running_job_keeps_no_result(
        api, tenant, fault_pool, session_factory, ring):
    [worker] = _exactly(fault_pool, 1)
    batch_id, [stalled, cancelled, *neighbours] = _seed(session_factory, tenant, [STALLED, {}, {}, {}], seed=7000)
    ring(f"{PREFIX}.caption")
    wait_until(lambda: set(_statuses(session_factory, [stalled, cancelled]).values()) == {"running"}, timeout=120,
               interval=0.1, what="the batch to be claimed")
    _, [waiting] = _seed(session_factory, tenant, [{}], seed=7100, in_batch=False)  # queued behind the stall

    with api.client(tenant) as http:
        running = http.post(f"/v1/jobs/{cancelled}/cancel")
        queued = http.post(f"/v1/jobs/{waiting}/cancel")
        assert (running.status_code, running.json()["status"]) == (200, "cancelled")
        assert (queued.status_code, queued.json()["status"]) == (200, "cancelled")
        jobs = wait_for_final(session_factory, [stalled, cancelled, *neighbours], timeout=120)
        counts = http.get(f"/v1/batches/{batch_id}").json()
        timed_out = http.get(f"/v1/jobs/{stalled}").json()

    assert (timed_out["status"], timed_out["error_code"]) == ("failed", "timeout")
    assert f"time limit of {JOB_TIME_LIMIT}s" in timed_out["error"] and timed_out["result"] is None
    assert all(jobs[i].status == "succeeded" and jobs[i].error_code is None for i in neighbours)
    # The batched call stalled, so each job ran alone: the cancelled one's result came back and was refused.
    assert (jobs[cancelled].status, jobs[cancelled].result, jobs[cancelled].attempts) == ("cancelled", None, 1)
    assert counts["counts"] == {"queued": 0, "running": 0, "succeeded": 2, "failed": 1, "cancelled": 1}
    assert counts["done"] == 4 and counts["finished"] is True
    with session_factory() as session:
        assert (session.get(Job, waiting).status, session.get(Job, waiting).attempts) == ("cancelled", 0)
    assert wait_until(lambda: _log_counts(worker) == (3, 1) or None, timeout=30, what="the worker's write log")

    # The same worker process goes on to serve other jobs.
    _, later = _seed(session_factory, tenant, [{}, {}, {}], seed=7200)
    ring(f"{PREFIX}.caption")
    done = wait_for_final(session_factory, later, timeout=60)
    assert worker.process.poll() is None
    assert all(job.status == "succeeded" and job.lease_owner.endswith(f"/{worker.pid}") for job in done.values())


@pytest.mark.timeout(300)
def test_sigterm_mid_batch_writes_the_batch_and_hands_the_rest_to_the_other_worker(
        tenant, fault_pool, session_factory, ring):
    first, second = _exactly(fault_pool, 2)
    # 40 jobs: the first batch of 16 (highest priority, one of them stalled) and 24 more, still queued.
    _, head = _seed(session_factory, tenant, [STALLED] + [{}] * 15, seed=7300, priority=5)
    _, rest = _seed(session_factory, tenant, [{}] * 24, seed=7400)
    ring(f"{PREFIX}.caption")
    holder = wait_until(lambda: _holder(session_factory, head[0], (first, second)), timeout=120, interval=0.1,
                        what="a worker to claim the stalled batch")
    other = second if holder is first else first
    os.kill(holder.pid, signal.SIGTERM)
    assert holder.process.wait(timeout=90) == 0, "a warm shutdown exits cleanly"
    fault_pool.workers.remove(holder)

    jobs = wait_for_final(session_factory, head + rest, timeout=120)
    assert jobs[head[0]].error_code == "timeout"
    assert all(jobs[i].status == "succeeded" for i in head[1:] + rest)
    assert all(jobs[i].attempts == 1 for i in head + rest), "nothing was left to a lease expiry"
    assert all(jobs[i].lease_owner.endswith(f"/{holder.pid}") for i in head)
    assert all(jobs[i].lease_owner.endswith(f"/{other.pid}") for i in rest), "the rest went to the other worker"
    # The first batch was full, so the holder had claimed the next one ahead while the stall ran: it handed it back.
    assert "handed 16 jobs back to the queue" in holder.log_path.read_text(errors="replace")


def _holder(session_factory, job_id: uuid.UUID, workers):
    with session_factory() as session:
        job = session.get(Job, job_id)
        owner = job.lease_owner if job.status == "running" else None
    return next((w for w in workers if owner and owner.endswith(f"/{w.pid}")), None)
