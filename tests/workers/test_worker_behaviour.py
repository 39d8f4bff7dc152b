"""Real workers on jobs seeded into the ledger: per-job error isolation, stale doorbells, the sweeper, one model load."""
from __future__ import annotations

import hashlib
import uuid
from datetime import timedelta

import pytest

from db.models import Job, utcnow
from db.queries import ImageFacts, NewJob, insert_jobs, store_image
from image_factory import photo_jpeg, shape_png, truncated_jpeg
from polling import wait_for_final, wait_until
from workers.celery_app import RUN_QUEUE_TASK, PendingRings, make_celery
from workers.config import WorkerSettings


def _facts(data: bytes) -> ImageFacts:
    return ImageFacts(data=data, sha256=hashlib.sha256(data).hexdigest(), format="PNG", width=1, height=1)


def _seed(session_factory, tenant, images: list[bytes], task: str = "caption", params: dict | None = None,
          **columns) -> list[uuid.UUID]:
    """Jobs written straight into the ledger (bypassing the API's checks), on the served queue."""
    with session_factory.begin() as session:
        for data in images:
            store_image(session, tenant_id=tenant.id, image=_facts(data))
        jobs = insert_jobs(session, tenant_id=tenant.id, max_attempts=3, jobs=[
            NewJob(task=task, queue=f"lensq.{task}", params=params or {}, image_sha256=_facts(d).sha256) for d in images
        ])
        for job in jobs:
            for name, value in columns.items():
                setattr(job, name, value)
        return [job.id for job in jobs]


@pytest.fixture
def ring(redis_url):
    app = make_celery(WorkerSettings(broker_url=redis_url))

    def send(queue: str, times: int = 1) -> None:
        for _ in range(times):
            app.send_task(RUN_QUEUE_TASK, args=[queue], kwargs={"reason": "test"}, queue=queue)

    return send


@pytest.mark.timeout(180)
def test_a_bad_image_fails_alone(tenant, two_workers, session_factory, ring):
    good = [shape_png(3000 + i) for i in range(5)] + [photo_jpeg("coffee")]
    bad = [truncated_jpeg(), b"not an image at all"]
    ids = _seed(session_factory, tenant, good[:3] + bad + good[3:], task="vqa", params={"question": "what shape?"})
    ring("lensq.vqa")
    jobs = wait_for_final(session_factory, ids, timeout=120)
    statuses = [jobs[i].status for i in ids]
    assert statuses == ["succeeded"] * 3 + ["failed"] * 2 + ["succeeded"] * 3
    for job_id in ids[3:5]:
        assert jobs[job_id].error.startswith("image: ") and jobs[job_id].result is None
        assert jobs[job_id].error_code == "input"
    assert all(jobs[i].error_code is None for i in ids if jobs[i].status == "succeeded")
    assert all(isinstance(jobs[i].result["answer"], str) for i in ids if jobs[i].status == "succeeded")


@pytest.mark.timeout(180)
def test_a_job_the_model_fails_on_fails_alone(tenant, two_workers, session_factory, ring):
    images = [shape_png(3050 + i) for i in range(4)]
    good = _seed(session_factory, tenant, images[:3], task="vqa", params={"question": "what shape?"})
    # Written straight into the ledger without its question (the API would refuse it): the model call raises.
    [poison] = _seed(session_factory, tenant, images[3:], task="vqa", params={})
    ring("lensq.vqa")
    jobs = wait_for_final(session_factory, good + [poison], timeout=120)
    assert (jobs[poison].status, jobs[poison].error_code) == ("failed", "model")
    assert jobs[poison].error.startswith("model: KeyError")
    assert all(jobs[i].status == "succeeded" and jobs[i].error_code is None for i in good)


@pytest.mark.timeout(180)
def test_duplicate_and_stale_doorbells_claim_nothing_twice(tenant, two_workers, session_factory, ring):
    ids = _seed(session_factory, tenant, [shape_png(3100 + i) for i in range(3)], task="classify",
                params={"labels": ["circle", "rectangle", "triangle"]})
    ring("lensq.classify", times=10)
    jobs = wait_for_final(session_factory, ids, timeout=120)
    assert all(job.status == "succeeded" and job.attempts == 1 for job in jobs.values())


@pytest.mark.timeout(180)
def test_a_worker_counts_each_ring_it_takes_as_answered(tenant, two_workers, session_factory, ring, redis_url):
    """The API counts the rings it sends (PendingRings) and sends none while one still waits; each worker counts a
    ring it takes as answered before it reads the queue, so the next job rings again."""
    queue = "lensq.sentiment"
    counted = PendingRings(redis_url, lapse_seconds=600)  # no lapse within the test: only answers bring it down
    broker = counted.client
    broker.delete(PendingRings.key(queue))
    try:
        assert counted.reserve(queue, 3) == 3
        ids = _seed(session_factory, tenant, [shape_png(3150 + i) for i in range(4)], task="sentiment",
                    params={"text": "a fine day"})
        ring(queue, times=3)  # the three rings the count stands for
        jobs = wait_for_final(session_factory, ids, timeout=120)
        assert all(job.status == "succeeded" for job in jobs.values())
        wait_until(lambda: broker.get(PendingRings.key(queue)) == b"0", timeout=30,
                   what="the workers to count the three rings as answered")
    finally:
        broker.delete(PendingRings.key(queue))


@pytest.mark.timeout(180)
def test_sweeper_requeues_an_expired_lease_and_fails_after_max_attempts(tenant, two_workers, session_factory):
    expired = utcnow() - timedelta(seconds=30)
    lost_once = _seed(session_factory, tenant, [shape_png(3200)], status="running", attempts=1, lease_owner="ghost/1",
                      lease_token="t1", lease_expires_at=expired)
    lost_always = _seed(session_factory, tenant, [shape_png(3201)], status="running", attempts=3, lease_owner="ghost/2",
                        lease_token="t2", lease_expires_at=expired)
    jobs = wait_for_final(session_factory, lost_once + lost_always, timeout=120)
    recovered, given_up = jobs[lost_once[0]], jobs[lost_always[0]]
    assert (recovered.status, recovered.attempts) == ("succeeded", 2)
    assert recovered.lease_owner.rsplit("/", 1)[1] in {str(w.pid) for w in two_workers}
    assert given_up.status == "failed" and "lease expired" in given_up.error and given_up.attempts == 3
    assert given_up.error_code == "dead" and recovered.error_code is None


@pytest.mark.timeout(180)
def test_queued_jobs_without_a_doorbell_are_rung_by_the_sweeper(tenant, two_workers, session_factory):
    ids = _seed(session_factory, tenant, [shape_png(3300 + i) for i in range(4)], task="sentiment",
                params={"text": "no bell rang for me"}, rung_at=utcnow() - timedelta(seconds=60))
    jobs = wait_for_final(session_factory, ids, timeout=60)
    assert all(job.status == "succeeded" for job in jobs.values())


@pytest.mark.timeout(180)
def test_each_worker_loads_the_model_once(tenant, two_workers, session_factory, ring):
    ids = _seed(session_factory, tenant, [shape_png(3500 + i) for i in range(40)])
    ring("lensq.caption", times=4)  # every doorbell loads the model first, so both workers load it
    wait_for_final(session_factory, ids, timeout=120)
    for worker in two_workers:
        log = wait_until(lambda: "loaded lensq-tiny@" in (text := worker.log_path.read_text()) and text,
                         timeout=60, what=f"{worker.name} to have loaded the model")
        assert log.count("loaded lensq-tiny@") == 1


@pytest.mark.timeout(180)
def test_a_cancelled_job_is_never_claimed(tenant, two_workers, session_factory, ring):
    [cancelled] = _seed(session_factory, tenant, [shape_png(3600)], status="cancelled")
    [queued] = _seed(session_factory, tenant, [shape_png(3601)])
    ring("lensq.caption")
    wait_for_final(session_factory, [queued], timeout=60)
    with session_factory() as session:
        job = session.get(Job, cancelled)
        assert (job.status, job.attempts, job.result) == ("cancelled", 0, None)
