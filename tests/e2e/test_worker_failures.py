"""Failures: kill -9 of a worker mid-batch, and a Redis flush with jobs queued — no job lost, none run twice to a result."""
from __future__ import annotations

import json
import time
import uuid

import pytest
import redis
from sqlalchemy import select

from db.models import Job
from image_factory import data_url, shape_png
from polling import wait_for_final, wait_until
from workers.config import TASK_KINDS

QUEUES = [f"lensq.{task}" for task in TASK_KINDS]


def _leased_to(session_factory, pid: int) -> list[uuid.UUID]:
    with session_factory() as session:
        return list(session.scalars(select(Job.id).where(Job.status == "running", Job.lease_owner.like(f"%/{pid}"))))


@pytest.mark.timeout(300)
def test_kill_9_mid_batch_its_jobs_finish_on_the_other_worker(api, tenant, worker_pool, session_factory):
    victim, survivor = worker_pool.ensure(2)[:2]
    items = [{"image": data_url(shape_png(1000 + i)), "ref": f"k{i}"} for i in range(96)]
    with api.client(tenant) as http:
        batch = http.post("/v1/batches", json={"task": "caption", "items": items}).json()
        ids = [uuid.UUID(json.loads(line)["job_id"]) for line in http.get(batch["results_url"]).text.splitlines()]

    wait_until(lambda: _leased_to(session_factory, victim.pid), timeout=120, interval=0.05,
               what="the victim worker to hold a leased batch")
    worker_pool.kill_hard(victim)
    orphaned = _leased_to(session_factory, victim.pid)
    assert orphaned, "the victim's jobs were written before the kill landed"

    jobs = wait_for_final(session_factory, ids, timeout=180)
    assert all(job.status == "succeeded" and job.result and job.error is None for job in jobs.values())
    for job_id in orphaned:
        job = jobs[job_id]
        assert job.attempts == 2, "re-run exactly once, after the lease expired"
        assert job.lease_owner.endswith(f"/{survivor.pid}")
        assert isinstance(job.result["caption"], str)


def _doorbells_once_settled(broker: redis.Redis, quiet_seconds: float = 0.5) -> dict[str, int]:
    """The doorbells waiting on each queue once their number has not changed for `quiet_seconds`."""
    def counts() -> dict[str, int]:
        return {queue: broker.llen(queue) for queue in QUEUES}

    previous = counts()
    while True:
        time.sleep(quiet_seconds)
        now = counts()
        if now == previous:
            return now
        previous = now


@pytest.mark.timeout(300)
def test_redis_flush_with_50_jobs_queued_all_complete(api, tenant, worker_pool, session_factory, redis_url):
    worker_pool.stop_all()  # nobody consumes: the 50 doorbells wait in Redis
    tasks = ("caption", "vqa", "sentiment", "classify")
    fields = {"caption": {}, "vqa": {"question": "what shape?"}, "sentiment": {"text": "nice"},
              "classify": {"labels": ["circle", "triangle"]}}
    with api.client(tenant) as http:
        ids = []
        for i in range(50):
            task = tasks[i % 4]
            response = http.post("/v1/jobs", json={"task": task, "image": data_url(shape_png(2000 + i)), **fields[task]})
            assert response.status_code == 202
            ids.append(uuid.UUID(response.json()["id"]))
    broker = redis.Redis.from_url(redis_url)
    # The API rings from a thread of its own, jobs committed close together in one ring: once no new doorbell has
    # arrived for a while, every job's is in Redis (none can land after the flush and stand in for the sweeper).
    waiting = _doorbells_once_settled(broker)
    assert all(waiting[queue] >= 1 for queue in QUEUES), waiting
    # FLUSHDB on this run's own broker DB: every broker key is gone, as with FLUSHALL, without touching other DBs.
    broker.flushdb()
    assert sum(broker.llen(queue) for queue in QUEUES) == 0

    worker_pool.ensure(2)  # their sweepers re-ring the queued jobs whose doorbell was lost
    jobs = wait_for_final(session_factory, ids, timeout=180)
    assert all(job.status == "succeeded" and job.attempts == 1 for job in jobs.values())
