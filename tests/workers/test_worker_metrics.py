"""A worker's Prometheus endpoint after real jobs: job counters by task, batch sizes, model latency; and the API's."""
from __future__ import annotations

import uuid

import httpx
import pytest
from sqlalchemy import select

from db.models import Job
from db.queries import create_api_key, get_or_create_tenant

from image_factory import data_url, shape_png
from metrics_text import scrape, total
from polling import wait_for_final, wait_until

JOBS = 6


def _worker_totals(workers, name: str, **labels: str) -> float:
    return sum(total(scrape(w.metrics_url), name, **labels) for w in workers)


@pytest.fixture(scope="module")
def sentiment_run(api, worker_pool, session_factory):
    """Six sentiment jobs submitted as one batch and run by the pool; the live workers' counters before and after."""
    workers = worker_pool.ensure(1)
    names = ("lensq_worker_jobs_total", "lensq_worker_batch_size_count", "lensq_worker_batch_size_sum",
             "lensq_worker_model_call_seconds_count")
    before = {name: _worker_totals(workers, name, task="sentiment") for name in names}
    items = [{"image": data_url(shape_png(40 + i)), "text": f"post number {i}"} for i in range(JOBS)]
    with session_factory.begin() as session:
        tenant = get_or_create_tenant(session, name="worker-metrics")
        _, token = create_api_key(session, tenant_id=tenant.id, name="metrics")
    with httpx.Client(base_url=api.url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as http:
        response = http.post("/v1/batches", json={"task": "sentiment", "items": items})
        assert response.status_code == 202, response.text
        batch_id = uuid.UUID(response.json()["id"])
    with session_factory() as session:
        job_ids = list(session.scalars(select(Job.id).where(Job.batch_id == batch_id)))
    wait_for_final(session_factory, job_ids, timeout=120)
    after = {name: _worker_totals(workers, name, task="sentiment") for name in names}
    return {name: after[name] - before[name] for name in names}


def test_worker_counts_each_job_by_task_and_outcome(sentiment_run):
    assert sentiment_run["lensq_worker_jobs_total"] == JOBS


def test_worker_batch_size_histogram_adds_up_to_the_jobs(sentiment_run):
    assert sentiment_run["lensq_worker_batch_size_count"] >= 1
    assert sentiment_run["lensq_worker_batch_size_sum"] == JOBS  # every claimed job is in exactly one batch
    assert sentiment_run["lensq_worker_model_call_seconds_count"] >= 1


def test_worker_endpoint_reports_queue_depth_for_every_task(sentiment_run, worker_pool):
    samples = scrape(worker_pool.alive()[0].metrics_url)
    depth = {s.labels["task"] for s in samples if s.name == "lensq_queue_depth"}
    assert depth == {"caption", "vqa", "sentiment", "classify"}
    assert total(samples, "lensq_ledger_up") == 1


def test_api_metrics_show_the_run_from_the_ledger(sentiment_run, api):
    """`curl /metrics` on the API after a run: non-zero job counters and a batch-size histogram (ledger-derived)."""
    def ledger_has_the_run():
        samples = scrape(f"{api.url}/metrics")
        finished = total(samples, "lensq_ledger_jobs_finished_total", task="sentiment", status="succeeded")
        batches = total(samples, "lensq_ledger_batch_size_count", task="sentiment")
        return finished >= JOBS and batches >= 1 and samples

    # The whole-ledger counts are cached per API process (LENSQ_METRICS_LEDGER_CACHE_SECONDS, 15s by default).
    samples = wait_until(ledger_has_the_run, timeout=30, interval=1, what="the run in the API's ledger metrics")
    assert total(samples, "lensq_ledger_batch_size_sum", task="sentiment") >= JOBS
    assert total(samples, "lensq_ledger_batch_size_bucket", task="sentiment", le="+Inf") >= 1


def test_lease_expiry_and_retry_are_counted(worker_pool, session_factory):
    """A job whose worker vanished (running, lease expired, one attempt spent): a live worker's sweeper re-queues it,
    a worker claims it again as attempt two and runs it; the three counters each move by one."""
    import hashlib
    from datetime import timedelta

    from sqlalchemy import update

    from db.models import utcnow
    from db.queries import ImageFacts, NewJob, insert_jobs, store_image

    workers = worker_pool.ensure(1)
    names = ("lensq_worker_lease_expiries_total", "lensq_worker_retries_total", "lensq_worker_jobs_total")
    before = {name: _worker_totals(workers, name, task="classify") for name in names}
    image = shape_png(77)
    facts = ImageFacts(data=image, sha256=hashlib.sha256(image).hexdigest(), format="PNG", width=64, height=64)
    with session_factory.begin() as session:
        tenant = get_or_create_tenant(session, name="worker-metrics")
        store_image(session, tenant_id=tenant.id, image=facts)
        [job] = insert_jobs(session, tenant_id=tenant.id, max_attempts=3, jobs=[NewJob(
            task="classify", queue="lensq.classify", params={"labels": ["circle", "square"]}, image_sha256=facts.sha256)])
        session.execute(update(Job).where(Job.id == job.id).values(
            status="running", attempts=1, lease_owner="gone@test", lease_token="lost-lease",
            lease_expires_at=utcnow() - timedelta(seconds=30)))
    [done] = wait_for_final(session_factory, [job.id], timeout=60).values()
    assert done.status == "succeeded" and done.attempts == 2
    after = {name: _worker_totals(workers, name, task="classify") for name in names}
    assert {name: after[name] - before[name] for name in names} == {name: 1 for name in names}
