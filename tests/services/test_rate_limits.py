"""Per-key request rate and per-tenant job quota, shared by two API processes; the in-process limiter without Redis."""
from __future__ import annotations

import secrets
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from db.models import KEY_SCOPES
from image_factory import data_url, shape_png
from polling import wait_until
from services.processes import api_command, free_port, start_process, stop_process, wait_until_ready


def start_apis(env: dict[str, str], log_dir: Path, count: int = 1) -> list[tuple[str, object]]:
    """`count` uvicorn API processes on this env, started together; (url, process) each."""
    started = []
    for index in range(count):
        port = free_port()
        log_path = log_dir / f"api-{index}.log"
        started.append((f"http://127.0.0.1:{port}", start_process(api_command(port=port), env=env, log_path=log_path),
                        log_path))
    for url, process, log_path in started:
        wait_until_ready(f"{url}/healthz", process=process, timeout=60, log_path=log_path)
    return [(url, process) for url, process, _ in started]


@pytest.fixture(scope="module")
def two_apis(service_env, tmp_path_factory):
    """Two API processes on the same database and Redis (no worker serves their queues)."""
    env = {**service_env, "LENSQ_QUEUE_PREFIX": "unserved"}
    servers = start_apis(env, tmp_path_factory.mktemp("two-apis"), count=2)
    yield [url for url, _ in servers]
    for _, process in servers:
        stop_process(process)


def make_key(session_factory, *, rate: int | None = None, tenant_name: str | None = None) -> dict:
    """A key with every scope (for a new tenant unless one is named): its headers and tenant id."""
    from db.queries import create_api_key, get_or_create_tenant

    with session_factory.begin() as session:
        tenant = get_or_create_tenant(session, name=tenant_name or f"tenant-{secrets.token_hex(4)}")
        _, token = create_api_key(session, tenant_id=tenant.id, scopes=KEY_SCOPES, rate_limit_per_minute=rate)
        return {"headers": {"Authorization": f"Bearer {token}"}, "tenant_id": tenant.id, "tenant_name": tenant.name}


def assert_refused(response: httpx.Response, field: str) -> None:
    assert response.status_code == 429, response.text
    assert response.json()["error"]["field"] == field
    assert 1 <= int(response.headers["retry-after"]) <= 60


def job_body(index: int) -> dict:
    return {"task": "caption", "image": data_url(shape_png(index))}


def batch_body(index: int, count: int) -> dict:
    return {"task": "caption", "items": [{"image": data_url(shape_png(index))}] * count}


def test_a_keys_rate_is_counted_across_both_processes(two_apis, session_factory):
    key = make_key(session_factory, rate=6)
    same_tenant = make_key(session_factory, tenant_name=key["tenant_name"])
    for i in range(6):
        assert httpx.get(f"{two_apis[i % 2]}/v1/jobs", headers=key["headers"]).status_code == 200
    for url in two_apis:  # each process alone has seen 3: only a shared count refuses these
        assert_refused(httpx.get(f"{url}/v1/jobs", headers=key["headers"]), "Authorization")
    assert httpx.get(f"{two_apis[0]}/v1/jobs", headers=same_tenant["headers"]).status_code == 200  # per key


def test_a_tenants_quota_of_active_jobs(two_apis, session_factory):
    key = make_key(session_factory)
    first, second = (httpx.Client(base_url=url, headers=key["headers"], timeout=60) for url in two_apis)
    with first, second:
        assert first.patch("/v1/tenant", json={"max_active_jobs": 3}).status_code == 200
        jobs = [client.post("/v1/jobs", json=job_body(20 + i), headers={"Idempotency-Key": f"k{i}"})
                for i, client in enumerate([first, second, first])]
        assert [job.status_code for job in jobs] == [202, 202, 202]
        assert_refused(second.post("/v1/jobs", json=job_body(30)), "jobs")
        assert_refused(first.post("/v1/batches", json=batch_body(31, 2)), "jobs")
        too_big = second.post("/v1/batches", json=batch_body(32, 4))
        assert too_big.status_code == 413 and too_big.json()["error"]["field"] == "jobs"
        replay = second.post("/v1/jobs", json=job_body(20), headers={"Idempotency-Key": "k0"})
        assert replay.status_code == 200 and replay.json()["id"] == jobs[0].json()["id"]
        assert first.post(f"/v1/jobs/{jobs[0].json()['id']}/cancel").status_code == 200
        assert second.post("/v1/jobs", json=job_body(33)).status_code == 202
        assert first.get("/v1/tenant").json()["active_jobs"] == 3


def test_the_quota_holds_under_concurrent_submissions(two_apis, session_factory):
    from db.queries import count_active_jobs

    key = make_key(session_factory)
    quota = httpx.patch(f"{two_apis[0]}/v1/tenant", headers=key["headers"], json={"max_active_jobs": 4})
    assert quota.status_code == 200

    def submit(index: int) -> int:
        url = two_apis[index % 2]
        return httpx.post(f"{url}/v1/jobs", headers=key["headers"], json=job_body(40 + index), timeout=60).status_code

    with ThreadPoolExecutor(max_workers=12) as pool:
        statuses = Counter(pool.map(submit, range(12)))
    assert statuses == {202: 4, 429: 8}
    with session_factory() as session:
        assert count_active_jobs(session, tenant_id=key["tenant_id"]) == 4


def test_without_redis_an_in_process_limiter_and_the_sqlite_quota(tmp_path):
    """The embedded setting (SQLite ledger, SQLAlchemy broker): limits still hold, counted in the one process."""
    from db.migrate import upgrade
    from db.session import get_engine, get_session_factory

    database_url = f"sqlite:///{tmp_path / 'lensq.db'}"
    upgrade(database_url)
    sessions = get_session_factory(database_url)
    default_rate, own_rate = make_key(sessions), make_key(sessions, rate=100)
    env = {"LENSQ_DATABASE_URL": database_url, "LENSQ_BROKER_URL": f"sqla+sqlite:///{tmp_path / 'broker.db'}",
           "LENSQ_KEY_RATE_LIMIT_PER_MINUTE": "4", "LENSQ_TENANT_MAX_ACTIVE_JOBS": "1",
           "LENSQ_RATE_LIMIT_REDIS_URL": ""}
    [(url, process)] = start_apis(env, tmp_path)
    try:
        for _ in range(4):
            assert httpx.get(f"{url}/v1/jobs", headers=default_rate["headers"]).status_code == 200
        assert_refused(httpx.get(f"{url}/v1/jobs", headers=default_rate["headers"]), "Authorization")
        with httpx.Client(base_url=url, headers=own_rate["headers"], timeout=60) as http:
            assert http.post("/v1/jobs", json=job_body(50)).status_code == 202
            assert_refused(http.post("/v1/jobs", json=job_body(51)), "jobs")
    finally:
        stop_process(process)
        get_engine(database_url).dispose()


def test_an_unreachable_rate_counter_does_not_stop_the_api(service_env, session_factory, tmp_path):
    """Redis can be flushed or down without losing a job: requests go on, uncounted (the ledger is the truth)."""
    env = {**service_env, "LENSQ_QUEUE_PREFIX": "unserved", "LENSQ_RATE_LIMIT_REDIS_URL": "redis://127.0.0.1:1/0"}
    key = make_key(session_factory, rate=1)
    [(url, process)] = start_apis(env, tmp_path)
    try:
        assert [httpx.get(f"{url}/v1/jobs", headers=key["headers"]).status_code for _ in range(3)] == [200] * 3
    finally:
        stop_process(process)


@pytest.mark.parametrize("kind", ["local", "redis"])
def test_window_counters_count_then_start_a_new_window(kind, redis_url):
    from services.rate_limits import LocalWindowCounter, RedisWindowCounter

    counter = LocalWindowCounter() if kind == "local" else RedisWindowCounter(redis_url)
    name = f"test:{uuid.uuid4()}"
    assert [counter.hit(name, 1)[0] for _ in range(3)] == [1, 2, 3]
    wait_until(lambda: counter.hit(name, 1)[0] == 1, timeout=5, interval=0.1, what="a new window")


def test_a_revoked_key_stores_nothing_even_where_it_is_cached(two_apis, session_factory):
    """The intake routes trust a key they looked up for a few seconds (services.deps.KEY_CACHE_SECONDS), but their
    transaction confirms it: a key revoked in one process stores no job through another that still caches it."""
    from db.models import Job

    admin = make_key(session_factory)
    created = httpx.post(f"{two_apis[0]}/v1/keys", headers=admin["headers"], json={"scopes": ["submit", "read"]})
    submitter = {"Authorization": f"Bearer {created.json()['token']}"}
    for index, url in enumerate(two_apis):  # both processes have now cached the key
        assert httpx.post(f"{url}/v1/jobs", headers=submitter, json=job_body(60 + index)).status_code == 202
        assert httpx.post(f"{url}/v1/batches", headers=submitter, json=batch_body(62 + index, 1)).status_code == 202
    revoked = httpx.post(f"{two_apis[0]}/v1/keys/{created.json()['id']}/revoke", headers=admin["headers"])
    assert revoked.status_code == 200
    for url in two_apis:
        for response in (httpx.post(f"{url}/v1/jobs", headers=submitter, json=job_body(70)),
                         httpx.post(f"{url}/v1/jobs", headers={**submitter, "Idempotency-Key": "k"},
                                    json=job_body(71)),
                         httpx.post(f"{url}/v1/batches", headers=submitter, json=batch_body(72, 2)),
                         httpx.get(f"{url}/v1/jobs", headers=submitter)):
            assert response.status_code == 401 and response.json()["error"]["field"] == "Authorization", response.text
    with session_factory() as session:
        assert session.query(Job).filter(Job.tenant_id == admin["tenant_id"]).count() == 4


def test_hits_of_one_key_arriving_together_are_counted_in_fewer_round_trips(redis_url):
    import asyncio

    import redis

    from services.rate_limits import RedisWindowCounter

    counter = RedisWindowCounter(redis_url)
    name = f"test:{uuid.uuid4()}"
    stats = redis.Redis.from_url(redis_url)

    def scripts_run() -> int:
        calls = stats.info("commandstats")
        return sum(calls.get(command, {}).get("calls", 0) for command in ("cmdstat_evalsha", "cmdstat_eval"))

    async def hits(count: int) -> list[int]:
        answers = await asyncio.gather(*(counter.hit_async(name, 60) for _ in range(count)))
        return [count for count, _ttl in answers]

    before = scripts_run()
    counts = asyncio.run(hits(50))
    assert sorted(counts) == list(range(1, 51))  # each request its own count, as if counted one by one
    assert scripts_run() - before < 50  # gathered: not one round trip each (commandstats is server-wide: other
    # clients' scripts could only raise the figure)
    assert counter.hit(name, 60)[0] == 51  # the synchronous counter shares the window
