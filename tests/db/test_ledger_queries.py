"""The ledger's queries on real Postgres: claim order and SKIP LOCKED, leases, guarded writes, the sweeper's side."""
from __future__ import annotations

import hashlib
import threading
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import func, select, text

from db.bulk import COPY_MIN_ROWS

from db.models import Image, Job, utcnow
from db.queries import (
    ImageFacts,
    JobOutcome,
    NewJob,
    cancel_job,
    claim_batch,
    extend_leases,
    get_job,
    hand_back_claim,
    insert_jobs,
    queues_to_rering,
    requeue_expired,
    store_image,
    store_images,
    write_results,
)


def _image(seed: str) -> ImageFacts:
    data = seed.encode()
    return ImageFacts(data=data, sha256=hashlib.sha256(data).hexdigest(), format="PNG", width=1, height=1)


def _queue() -> str:
    return f"test.{uuid.uuid4().hex[:8]}"


def _seed_jobs(session_factory, tenant, queue: str, priorities: list[int], max_attempts: int = 3) -> list[uuid.UUID]:
    image = _image(queue)
    with session_factory.begin() as session:
        store_image(session, tenant_id=tenant.id, image=image)
        jobs = insert_jobs(session, tenant_id=tenant.id, max_attempts=max_attempts, jobs=[
            NewJob(task="caption", queue=queue, params={}, image_sha256=image.sha256, priority=p, batch_index=i)
            for i, p in enumerate(priorities)
        ])
        return [job.id for job in jobs]


def test_images_are_content_addressed_within_a_tenant(session_factory, make_tenant):
    first, second = make_tenant(), make_tenant()
    image = _image("same bytes")
    with session_factory.begin() as session:
        for tenant in (first, first, second):
            store_image(session, tenant_id=tenant.id, image=image)
    with session_factory() as session:
        rows = session.scalars(select(Image.tenant_id).where(Image.sha256 == image.sha256)).all()
    assert sorted(map(str, rows)) == sorted([str(first.id), str(second.id)])


def test_claim_takes_highest_priority_then_oldest_and_leases_them(session_factory, tenant):
    queue = _queue()
    ids = _seed_jobs(session_factory, tenant, queue, [0, 5, 0, 9])
    with session_factory.begin() as session:
        claim = claim_batch(session, queue=queue, worker_id="w-a", limit=3, lease_seconds=30)
    assert [job.id for job in claim.jobs] == [ids[3], ids[1], ids[0]]
    assert claim.jobs[0].image_data == queue.encode()
    with session_factory() as session:
        job = get_job(session, tenant_id=tenant.id, job_id=ids[3])
        assert (job.status, job.lease_owner, job.attempts) == ("running", "w-a", 1)
        assert job.lease_expires_at > utcnow() + timedelta(seconds=20)
        assert get_job(session, tenant_id=tenant.id, job_id=ids[2]).status == "queued"


def test_concurrent_claims_skip_locked_rows(session_factory, tenant):
    """A claim whose transaction is still open does not block another worker, which takes other rows."""
    queue = _queue()
    _seed_jobs(session_factory, tenant, queue, [0] * 6)
    holding = session_factory()
    first = claim_batch(holding, queue=queue, worker_id="w-a", limit=4, lease_seconds=30)  # not committed yet
    result = {}
    other = threading.Thread(target=lambda: result.update(claim=_claim_in_new_session(session_factory, queue)))
    other.start()
    other.join(timeout=10)
    holding.commit()
    holding.close()
    assert not other.is_alive(), "the second claim waited on the first one's locks"
    first_ids = {job.id for job in first.jobs}
    second_ids = {job.id for job in result["claim"].jobs}
    assert len(first_ids) == 4 and len(second_ids) == 2 and not first_ids & second_ids


def _claim_in_new_session(session_factory, queue):
    with session_factory.begin() as session:
        return claim_batch(session, queue=queue, worker_id="w-b", limit=4, lease_seconds=30)


def test_write_results_only_under_the_current_lease(session_factory, tenant):
    queue = _queue()
    [job_id] = _seed_jobs(session_factory, tenant, queue, [0])
    with session_factory.begin() as session:
        stale = claim_batch(session, queue=queue, worker_id="w-a", limit=1, lease_seconds=30)
    with session_factory.begin() as session:  # the lease expires and the job goes to another worker
        session.get(Job, job_id).lease_expires_at = utcnow() - timedelta(seconds=1)
    with session_factory.begin() as session:
        assert requeue_expired(session).requeued == {queue: 1}
    with session_factory.begin() as session:
        fresh = claim_batch(session, queue=queue, worker_id="w-b", limit=1, lease_seconds=30)
    with session_factory.begin() as session:
        late = write_results(session, lease_token=stale.lease_token,
                             outcomes=[JobOutcome(job_id, result={"caption": "late"}, model_version="m")])
        on_time = write_results(session, lease_token=fresh.lease_token,
                                outcomes=[JobOutcome(job_id, result={"caption": "right"}, model_version="m")])
        again = write_results(session, lease_token=fresh.lease_token,
                              outcomes=[JobOutcome(job_id, result={"caption": "twice"}, model_version="m")])
    assert (late, on_time, again) == (0, 1, 0)
    with session_factory() as session:
        job = get_job(session, tenant_id=tenant.id, job_id=job_id)
    assert (job.status, job.result, job.attempts, job.lease_owner) == ("succeeded", {"caption": "right"}, 2, "w-b")


def test_errors_are_written_as_failed(session_factory, tenant):
    queue = _queue()
    [job_id] = _seed_jobs(session_factory, tenant, queue, [0])
    with session_factory.begin() as session:
        claim = claim_batch(session, queue=queue, worker_id="w-a", limit=1, lease_seconds=30)
        write_results(session, lease_token=claim.lease_token, outcomes=[JobOutcome(job_id, error="image: broken")])
    with session_factory() as session:
        job = get_job(session, tenant_id=tenant.id, job_id=job_id)
    assert (job.status, job.error, job.result) == ("failed", "image: broken", None)


def test_cancelled_running_job_discards_its_result(session_factory, tenant):
    queue = _queue()
    [job_id] = _seed_jobs(session_factory, tenant, queue, [0])
    with session_factory.begin() as session:
        claim = claim_batch(session, queue=queue, worker_id="w-a", limit=1, lease_seconds=30)
    with session_factory.begin() as session:
        assert cancel_job(session, tenant_id=tenant.id, job_id=job_id).status == "cancelled"
    with session_factory.begin() as session:
        assert write_results(session, lease_token=claim.lease_token, outcomes=[JobOutcome(job_id, result={})]) == 0


def test_extend_leases_pushes_expiry(session_factory, tenant):
    queue = _queue()
    [job_id] = _seed_jobs(session_factory, tenant, queue, [0])
    with session_factory.begin() as session:
        claim = claim_batch(session, queue=queue, worker_id="w-a", limit=1, lease_seconds=1)
    with session_factory.begin() as session:
        assert extend_leases(session, lease_token=claim.lease_token, lease_seconds=600) == 1
    with session_factory() as session:
        assert session.get(Job, job_id).lease_expires_at > utcnow() + timedelta(seconds=500)


def test_a_batch_handed_back_is_queued_as_before_its_claim(session_factory, tenant):
    """A batch claimed ahead that will not run: queued again with its attempts undone, and claimable by anyone."""
    queue = _queue()
    ids = _seed_jobs(session_factory, tenant, queue, [0, 0, 0])
    with session_factory.begin() as session:  # the third job has run once already: its claim here is attempt 2
        first = claim_batch(session, queue=queue, worker_id="w-a", limit=3, lease_seconds=30)
    with session_factory.begin() as session:
        session.get(Job, ids[2]).attempts = 2
    with session_factory.begin() as session:
        cancel_job(session, tenant_id=tenant.id, job_id=ids[1])
        assert hand_back_claim(session, lease_token=first.lease_token) == 2  # not the cancelled one
    with session_factory() as session:
        fresh, cancelled, retried = (session.get(Job, job_id) for job_id in ids)
        assert (fresh.status, fresh.attempts, fresh.lease_token, fresh.lease_owner, fresh.lease_expires_at,
                fresh.started_at) == ("queued", 0, None, None, None, None)
        assert (retried.status, retried.attempts) == ("queued", 1) and retried.started_at is not None
        assert cancelled.status == "cancelled"
    with session_factory.begin() as session:
        again = claim_batch(session, queue=queue, worker_id="w-b", limit=3, lease_seconds=30)
    assert sorted(job.id for job in again.jobs) == sorted([ids[0], ids[2]])
    assert sorted(job.attempts for job in again.jobs) == [1, 2]
    with session_factory.begin() as session:  # the old lease token no longer holds anything
        assert hand_back_claim(session, lease_token=first.lease_token) == 0


def test_sweeper_fails_a_job_after_max_attempts(session_factory, tenant):
    queue = _queue()
    [job_id] = _seed_jobs(session_factory, tenant, queue, [0], max_attempts=2)
    for attempt in (1, 2):
        with session_factory.begin() as session:
            assert len(claim_batch(session, queue=queue, worker_id="w", limit=1, lease_seconds=30).jobs) == 1
        with session_factory.begin() as session:
            report = requeue_expired(session, now=utcnow() + timedelta(seconds=60))
        assert (report.requeued.get(queue, 0), report.failed) == ((1, 0) if attempt == 1 else (0, 1))
    with session_factory() as session:
        job = get_job(session, tenant_id=tenant.id, job_id=job_id)
    assert job.status == "failed" and "lease expired" in job.error and job.attempts == 2


def test_queues_to_rering_finds_stale_queued_jobs_once_per_interval(session_factory, tenant):
    queue, unserved = _queue(), _queue()
    _seed_jobs(session_factory, tenant, queue, [0, 0])
    _seed_jobs(session_factory, tenant, unserved, [0])
    later = utcnow() + timedelta(seconds=10)
    with session_factory.begin() as session:
        assert queues_to_rering(session, queues=[queue], stale_seconds=5, now=later) == [queue]
    with session_factory.begin() as session:
        assert queues_to_rering(session, queues=[queue], stale_seconds=5, now=later + timedelta(seconds=1)) == []
    with session_factory.begin() as session:
        assert queues_to_rering(session, queues=[queue], stale_seconds=5, now=later + timedelta(seconds=6)) == [queue]


def test_idempotency_key_is_unique_per_tenant(session_factory, make_tenant):
    from sqlalchemy.exc import IntegrityError

    first, second = make_tenant(), make_tenant()
    queue = _queue()
    for tenant in (first, second):
        image = _image(queue)
        with session_factory.begin() as session:
            store_image(session, tenant_id=tenant.id, image=image)
            insert_jobs(session, tenant_id=tenant.id, max_attempts=3, idempotency_key="k", request_hash="h",
                        jobs=[NewJob(task="caption", queue=queue, params={}, image_sha256=image.sha256)])
    with pytest.raises(IntegrityError), session_factory.begin() as session:
        insert_jobs(session, tenant_id=first.id, max_attempts=3, idempotency_key="k", request_hash="h",
                    jobs=[NewJob(task="caption", queue=queue, params={}, image_sha256=_image(queue).sha256)])
    with session_factory() as session:
        assert session.scalar(select(func.count()).where(Job.idempotency_key == "k", Job.queue == queue)) == 2


def test_many_images_are_stored_once_each_however_often_sent(session_factory, tenant):
    """store_images past COPY_MIN_ROWS (binary COPY through a staging table): a tenant's images already stored are
    skipped, new ones stored with their bytes, and a transaction may store many twice."""
    prefix = uuid.uuid4().hex
    images = [_image(f"{prefix}-{k}") for k in range(2 * COPY_MIN_ROWS)]
    with session_factory.begin() as session:
        for image in images[:10]:
            store_image(session, tenant_id=tenant.id, image=image)
    with session_factory.begin() as session:
        store_images(session, tenant_id=tenant.id, images=images[: COPY_MIN_ROWS + 5])
        store_images(session, tenant_id=tenant.id, images=images[5:])
    with session_factory() as session:
        stored = session.execute(select(Image.sha256, Image.data, Image.size_bytes, Image.created_at)
                                 .where(Image.tenant_id == tenant.id, Image.sha256.in_([i.sha256 for i in images])))
        by_sha = {row.sha256: row for row in stored}
    assert set(by_sha) == {i.sha256 for i in images}
    assert all(by_sha[i.sha256].data == i.data and by_sha[i.sha256].size_bytes == len(i.data) for i in images)
    assert all(row.created_at.tzinfo is not None for row in by_sha.values())


def test_jobs_inserted_in_bulk_read_back_as_given(session_factory, tenant):
    """insert_jobs by binary COPY: each column as given (JSON params, NULLs, timestamps), as an INSERT would."""
    queue, image = _queue(), _image(uuid.uuid4().hex)
    params = [{"question": f"what colour is shape {k}? «ü»", "labels": ["a", "b"], "max_new_tokens": k}
              for k in range(100)]
    with session_factory.begin() as session:
        store_image(session, tenant_id=tenant.id, image=image)
        inserted = insert_jobs(session, tenant_id=tenant.id, max_attempts=4, request_hash="h", jobs=[
            NewJob(task="vqa", queue=queue, params=p, image_sha256=image.sha256, priority=k % 3,
                   ref=None if k % 2 else f"ref-{k}", batch_index=k) for k, p in enumerate(params)])
    with session_factory() as session:
        jobs = {job.id: job for job in session.scalars(select(Job).where(Job.queue == queue))}
        null_results = session.scalar(text("SELECT count(*) FROM jobs WHERE queue = :q AND result IS NULL"),
                                      {"q": queue})
    assert set(jobs) == {job.id for job in inserted} and null_results == 100
    for job in inserted:
        stored = jobs[job.id]
        assert (stored.params, stored.ref, stored.priority, stored.batch_index) == (job.params, job.ref, job.priority,
                                                                                      job.batch_index)
        assert (stored.status, stored.attempts, stored.max_attempts, stored.request_hash) == ("queued", 0, 4, "h")
        assert stored.created_at == job.created_at and stored.lease_expires_at is None and stored.error is None
