"""Error codes in the ledger: written with each failure, set to 'dead' by the sweeper, and a filter for listing."""
from __future__ import annotations

import hashlib
import uuid
from datetime import timedelta

from db.models import utcnow
from db.queries import (
    ImageFacts,
    JobOutcome,
    NewJob,
    claim_batch,
    get_job,
    insert_jobs,
    list_jobs,
    requeue_expired,
    store_image,
    write_results,
)


def _seed(session_factory, tenant, count: int, max_attempts: int = 3) -> tuple[str, list[uuid.UUID]]:
    queue = f"codes.{uuid.uuid4().hex[:8]}"
    image = ImageFacts(data=queue.encode(), sha256=hashlib.sha256(queue.encode()).hexdigest(), format="PNG",
                       width=1, height=1)
    with session_factory.begin() as session:
        store_image(session, tenant_id=tenant.id, image=image)
        jobs = insert_jobs(session, tenant_id=tenant.id, max_attempts=max_attempts, jobs=[
            NewJob(task="caption", queue=queue, params={}, image_sha256=image.sha256) for _ in range(count)
        ])
        return queue, [job.id for job in jobs]


def test_write_results_stores_each_failure_with_its_code(session_factory, tenant):
    queue, [ok, bad_input, model, timeout, unclassified] = _seed(session_factory, tenant, 5)
    with session_factory.begin() as session:
        claim = claim_batch(session, queue=queue, worker_id="w", limit=5, lease_seconds=30)
        written = write_results(session, lease_token=claim.lease_token, outcomes=[
            JobOutcome(ok, result={"caption": "a circle"}),
            JobOutcome(bad_input, error="image: truncated", error_code="input"),
            JobOutcome(model, error="model: RuntimeError: boom", error_code="model"),
            JobOutcome(timeout, error="timeout: past 300s", error_code="timeout"),
            JobOutcome(unclassified, error="something else"),
        ])
    assert written == 5
    with session_factory() as session:
        codes = [get_job(session, tenant_id=tenant.id, job_id=i).error_code
                 for i in (ok, bad_input, model, timeout, unclassified)]
    assert codes == [None, "input", "model", "timeout", "model"]


def test_the_sweeper_marks_a_job_dead_after_max_attempts_and_a_tenant_can_list_them(
        session_factory, tenant, make_tenant):
    queue, ids = _seed(session_factory, tenant, 2, max_attempts=1)
    with session_factory.begin() as session:
        [claimed] = claim_batch(session, queue=queue, worker_id="lost/1", limit=1, lease_seconds=1).jobs
    dead, [alive] = claimed.id, [i for i in ids if i != claimed.id]
    with session_factory.begin() as session:
        report = requeue_expired(session, now=utcnow() + timedelta(seconds=60))
    assert report.failed >= 1
    with session_factory() as session:
        job = get_job(session, tenant_id=tenant.id, job_id=dead)
        listed = list_jobs(session, tenant_id=tenant.id, limit=10, error_code="dead")
        elsewhere = list_jobs(session, tenant_id=make_tenant().id, limit=10, error_code="dead")
    assert (job.status, job.error_code, job.lease_token) == ("failed", "dead", None)
    assert job.error.startswith("dead: ") and "on every attempt (1 of 1)" in job.error
    assert [j.id for j in listed] == [dead] and alive not in {j.id for j in listed}
    assert elsewhere == []


def test_the_api_lists_a_tenants_dead_jobs_by_error_code(session_factory, tenant, make_tenant, api):
    queue, ids = _seed(session_factory, tenant, 2, max_attempts=1)
    with session_factory.begin() as session:
        [claimed] = claim_batch(session, queue=queue, worker_id="lost/1", limit=1, lease_seconds=1).jobs
    with session_factory.begin() as session:
        requeue_expired(session, now=utcnow() + timedelta(seconds=60))
    with api.client(tenant) as http:
        dead = http.get("/v1/jobs", params={"error_code": "dead"}).json()["data"]
        unknown = http.get("/v1/jobs", params={"error_code": "no-such-code"})
    with api.client(make_tenant()) as http:
        elsewhere = http.get("/v1/jobs", params={"error_code": "dead"}).json()["data"]
    assert str(claimed.id) in {job["id"] for job in dead}
    assert all(job["error_code"] == "dead" and job["status"] == "failed" for job in dead)
    assert unknown.status_code == 422 and unknown.json()["error"]["field"] == "error_code"
    assert elsewhere == []
