"""SingleJobIntake with Idempotency-Keys, in process: keyed jobs stored together, and a key stored meanwhile."""
from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest

from image_factory import shape_png
from sql_statements import statements_sent


@dataclass
class Intake:
    """What these tests store jobs with: the settings, the tenant as its key is looked up, and a checked job."""

    settings: object
    current: object

    def job(self, index: int, key: str | None):
        from services.input_checks import check_job
        from services.submission import SingleJob

        checked = check_job({"task": "caption"}, lambda: shape_png(index), self.settings)
        return SingleJob(self.current, checked, None, key)


@pytest.fixture
def intake(session_factory, tenant, monkeypatch) -> Intake:
    from services import submission
    from services.config import ServiceSettings
    from services.deps import KeyCache, _look_up_key

    settings = ServiceSettings()
    monkeypatch.setattr(submission, "ring_safely", lambda queue_counts: None)  # no broker in these tests
    return Intake(settings, _look_up_key(session_factory, tenant.token, settings, KeyCache()))


def test_keyed_jobs_submitted_together_share_one_transaction(session_factory, intake):
    """Twenty keyed jobs that arrive together take the tenant's lock (and commit) once or twice, not twenty times;
    each is stored under its own key."""
    from services import submission

    single_jobs = submission.SingleJobIntake(session_factory, intake.settings)
    jobs = [intake.job(600 + i, f"grouped-{i}") for i in range(20)]

    async def submit_all() -> list:
        return await asyncio.gather(*(single_jobs.submit(job) for job in jobs))

    with statements_sent(lambda statement: "pg_advisory_xact_lock" in statement) as locks:
        stored = asyncio.run(submit_all())
    assert 1 <= len(locks) <= 2
    assert all(outcome.created for outcome in stored) and len({outcome.job_id for outcome in stored}) == 20


def test_a_key_stored_between_the_groups_look_up_and_its_insert_is_replayed(session_factory, tenant, intake,
                                                                             monkeypatch):
    """Should a job be stored under a key between a group's look-up of keys and its insert (by a store that takes
    no tenant lock: none does today, so the look-up is made to miss it here), the insert fails on the key's unique
    index, and the group's jobs are stored one by one: that key is replayed, the others are stored."""
    from services import submission

    with session_factory() as session:  # the job stored under the key meanwhile
        raced = submission.submit_job(session, tenant_id=tenant.id, checked=intake.job(500, None).checked,
                                      settings=intake.settings, idempotency_key="raced").job.id
    look_ups: list[list[str]] = []
    real_look_up = submission.find_jobs_by_idempotency_keys

    def misses_the_first_time(session, *, tenant_id, keys):  # as if that job committed just after this look-up
        look_ups.append(keys)
        return {} if len(look_ups) == 1 else real_look_up(session, tenant_id=tenant_id, keys=keys)

    monkeypatch.setattr(submission, "find_jobs_by_idempotency_keys", misses_the_first_time)
    jobs = [intake.job(500, "raced"), intake.job(501, "fresh"), intake.job(502, None)]
    outcomes = submission.SingleJobIntake(session_factory, intake.settings)._store_group(jobs)
    assert [outcome.created for outcome in outcomes] == [False, True, True]
    assert outcomes[0].job_id == raced
    assert len({outcome.job_id for outcome in outcomes}) == 3
    assert look_ups[0] == ["raced", "fresh"]  # one look-up for the group, then one per job alone
