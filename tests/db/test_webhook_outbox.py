"""The webhook outbox on real Postgres: each event commits with the change it reports, and a batch ends once."""
from __future__ import annotations

import hashlib
import threading
import uuid
from datetime import timedelta

from sqlalchemy import select

from db.models import Tenant, WebhookDelivery, utcnow
from db.queries import (
    ImageFacts,
    JobOutcome,
    NewJob,
    cancel_job,
    claim_batch,
    get_job,
    insert_batch,
    insert_jobs,
    requeue_expired,
    store_image,
    write_results,
)

# Never reached: a deliverer running in the same test session refuses the address and fails the row at once.
HOOK = "http://127.0.0.9/hook"


def _seed(session_factory, tenant_id, *, count: int = 1, batch: bool = False, max_attempts: int = 3,
          callback_url: str | None = None) -> tuple[str, list[uuid.UUID], uuid.UUID | None]:
    queue = f"test.{uuid.uuid4().hex[:8]}"
    data = queue.encode()
    image = ImageFacts(data=data, sha256=hashlib.sha256(data).hexdigest(), format="PNG", width=1, height=1)
    with session_factory.begin() as session:
        store_image(session, tenant_id=tenant_id, image=image)
        batch_id = None
        if batch:
            batch_id = insert_batch(session, tenant_id=tenant_id, total=count, callback_url=callback_url).id
        jobs = insert_jobs(session, tenant_id=tenant_id, max_attempts=max_attempts, batch_id=batch_id,
                           callback_url=None if batch else callback_url, jobs=[
                               NewJob(task="caption", queue=queue, params={}, image_sha256=image.sha256, batch_index=i)
                               for i in range(count)])
        return queue, [job.id for job in jobs], batch_id


def _events(session_factory, subject_id) -> list[WebhookDelivery]:
    with session_factory() as session:
        return list(session.scalars(select(WebhookDelivery).where(WebhookDelivery.subject_id == subject_id)))


def _with_tenant_hook(session_factory, tenant) -> None:
    with session_factory.begin() as session:
        session.get(Tenant, tenant.id).webhook_url = HOOK


def _claim(session_factory, queue: str, limit: int = 16):
    with session_factory.begin() as session:
        return claim_batch(session, queue=queue, worker_id="test", limit=limit, lease_seconds=60)


def test_a_result_and_its_event_commit_together_or_not_at_all(session_factory, tenant):
    _with_tenant_hook(session_factory, tenant)
    queue, [job_id], _ = _seed(session_factory, tenant.id)
    claim = _claim(session_factory, queue)
    outcome = JobOutcome(job_id, result={"caption": "a red circle"}, model_version="m1")
    with session_factory() as session:  # written, then rolled back: no result, and no event either
        assert write_results(session, lease_token=claim.lease_token, outcomes=[outcome]) == 1
        session.rollback()
    assert _events(session_factory, job_id) == []
    with session_factory.begin() as session:
        assert write_results(session, lease_token=claim.lease_token, outcomes=[outcome]) == 1
    [event] = _events(session_factory, job_id)
    assert event.event == "job.succeeded" and event.url == HOOK and event.tenant_id == tenant.id
    assert event.payload["data"]["result"] == {"caption": "a red circle"} and event.payload["id"] == str(event.id)
    with session_factory.begin() as session:  # a late duplicate under the same lease writes nothing, sends nothing
        assert write_results(session, lease_token=claim.lease_token, outcomes=[outcome]) == 0
    assert len(_events(session_factory, job_id)) == 1


def test_a_job_without_any_url_writes_no_event(session_factory, tenant):
    queue, [job_id], _ = _seed(session_factory, tenant.id)
    claim = _claim(session_factory, queue)
    with session_factory.begin() as session:
        write_results(session, lease_token=claim.lease_token, outcomes=[JobOutcome(job_id, result={"caption": "x"})])
    assert _events(session_factory, job_id) == []


def test_the_sweeper_failing_a_dead_job_writes_job_failed_with_it(session_factory, tenant):
    queue, [job_id], _ = _seed(session_factory, tenant.id, max_attempts=1, callback_url=HOOK)
    _claim(session_factory, queue)
    with session_factory.begin() as session:
        report = requeue_expired(session, now=utcnow() + timedelta(seconds=120))  # as if the lease had lapsed
    assert report.failed >= 1
    [event] = _events(session_factory, job_id)
    assert event.event == "job.failed" and event.payload["data"]["error_code"] == "dead"


def test_a_cancellation_writes_job_cancelled_once(session_factory, tenant):
    _, [job_id], _ = _seed(session_factory, tenant.id, callback_url=HOOK)
    for _ in range(2):  # the second cancel changes nothing, so it reports nothing
        with session_factory.begin() as session:
            cancel_job(session, tenant_id=tenant.id, job_id=job_id)
    [event] = _events(session_factory, job_id)
    assert event.event == "job.cancelled" and event.payload["data"]["status"] == "cancelled"


def _finish_concurrently(session_factory, claims, job_ids) -> None:
    """Each job's result written by its own thread, all at the same instant."""
    start = threading.Barrier(len(job_ids))

    def write(claim, job_id) -> None:
        with session_factory.begin() as session:
            start.wait()
            outcome = JobOutcome(job_id, result={"caption": "x"})
            write_results(session, lease_token=claim.lease_token, outcomes=[outcome])

    threads = [threading.Thread(target=write, args=pair) for pair in zip(claims, job_ids)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)


def test_writers_finishing_a_batch_together_write_exactly_one_batch_completed(session_factory, tenant):
    _with_tenant_hook(session_factory, tenant)  # the batch's jobs must still send nothing of their own
    for _ in range(10):  # two workers write a batch's last two jobs at once: neither may miss or double the end
        queue, job_ids, batch_id = _seed(session_factory, tenant.id, count=2, batch=True, callback_url=HOOK)
        claims = [_claim(session_factory, queue, limit=1) for _ in job_ids]
        _finish_concurrently(session_factory, claims, [claim.jobs[0].id for claim in claims])
        [event] = _events(session_factory, batch_id)
        assert event.event == "batch.completed" and event.payload["data"]["counts"]["succeeded"] == 2
        assert all(_events(session_factory, job_id) == [] for job_id in job_ids)
    with session_factory() as session:
        assert get_job(session, tenant_id=tenant.id, job_id=job_ids[0]).status == "succeeded"
