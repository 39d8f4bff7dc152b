"""Shared fixtures: a fresh Postgres database and Redis DB per run, the API under uvicorn, real Celery workers."""
from __future__ import annotations

import os
import secrets
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from worker_processes import Worker, WorkerPool

PG_HOST = os.environ.get("LENSQ_TEST_PG_HOST", "127.0.0.1")
PG_USER = os.environ.get("LENSQ_TEST_PG_USER", "postgres")
REDIS_HOST = os.environ.get("LENSQ_TEST_REDIS_HOST", "127.0.0.1")
TEST_LEASE_SECONDS = 5


# --- Postgres and Redis -------------------------------------------------------------------------

@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """A fresh, migrated Postgres database for this test run, dropped at the end."""
    import psycopg

    from db.migrate import upgrade

    name = f"lensq_test_{os.getpid()}_{secrets.token_hex(3)}"
    admin = f"postgresql://{PG_USER}@{PG_HOST}:5432/postgres"
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    url = f"postgresql+psycopg://{PG_USER}@{PG_HOST}:5432/{name}"
    upgrade(url)
    yield url
    from db.session import get_engine

    get_engine(url).dispose()
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _claim_redis_db() -> int:
    """A Redis DB number (1..15) no other test run holds: marked with a key that expires after an hour."""
    import redis

    for number in range(1, 16):
        client = redis.Redis(host=REDIS_HOST, db=number)
        if client.dbsize() == 0 and client.set("lensq-test-run", os.getpid(), nx=True, ex=3600):
            return number
    raise RuntimeError("no free Redis DB in 1..15 for this test run")


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """This run's own Redis DB (the broker); emptied at the end."""
    import redis

    number = _claim_redis_db()
    yield f"redis://{REDIS_HOST}:6379/{number}"
    redis.Redis(host=REDIS_HOST, db=number).flushdb()


@pytest.fixture(scope="session")
def session_factory(database_url):
    """Sessions on the test database, for tests that read or seed the ledger directly."""
    from db.session import get_session_factory

    return get_session_factory(database_url)


@pytest.fixture(scope="session")
def service_env(database_url, redis_url) -> dict[str, str]:
    """The environment every subprocess of the run gets: its database, its broker, short leases."""
    return {
        "LENSQ_DATABASE_URL": database_url,
        "LENSQ_BROKER_URL": redis_url,
        "LENSQ_LEASE_SECONDS": str(TEST_LEASE_SECONDS),
        "LENSQ_SWEEP_INTERVAL_SECONDS": "1",
        "LENSQ_STALE_QUEUED_SECONDS": "3",
        "LENSQ_BATCH_SIZE": "16",
        # Webhook receivers in tests listen on loopback, which production refuses; retries come back quickly.
        "LENSQ_WEBHOOK_ALLOW_CIDRS": '["127.0.0.1/32"]',
        "LENSQ_WEBHOOK_RETRY_BASE_SECONDS": "0.5",
        "LENSQ_MAX_IMAGE_BYTES": str(2_000_000),
        "LENSQ_MODEL": os.environ.get("LENSQ_MODEL", "lensq-tiny"),
        "LENSQ_DEVICE": "cpu",
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }


# --- tenants --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TenantKey:
    id: uuid.UUID
    name: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@pytest.fixture
def make_tenant(session_factory) -> Callable[[], TenantKey]:
    """Creates a fresh tenant with one API key."""
    from db.queries import create_api_key, get_or_create_tenant

    def make() -> TenantKey:
        with session_factory.begin() as session:
            tenant = get_or_create_tenant(session, name=f"tenant-{secrets.token_hex(4)}")
            _, token = create_api_key(session, tenant_id=tenant.id, name="test")
            return TenantKey(id=tenant.id, name=tenant.name, token=token)

    return make


@pytest.fixture
def tenant(make_tenant) -> TenantKey:
    return make_tenant()


# --- processes ------------------------------------------------------------------------------------

@dataclass
class ApiServer:
    url: str
    process: subprocess.Popen
    log_path: Path

    def client(self, tenant: TenantKey | None = None, timeout: float = 60) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=tenant.headers if tenant else {}, timeout=timeout)


def _start_api(env: dict[str, str], log_path: Path) -> ApiServer:
    from services.processes import api_command, free_port, start_process, wait_until_ready

    port = free_port()
    process = start_process(api_command(port=port), env=env, log_path=log_path)
    url = f"http://127.0.0.1:{port}"
    wait_until_ready(f"{url}/healthz", process=process, timeout=60, log_path=log_path)
    return ApiServer(url=url, process=process, log_path=log_path)


@pytest.fixture(scope="session")
def api(service_env, tmp_path_factory) -> Iterator[ApiServer]:
    """The API under uvicorn, ringing the queues the test workers serve."""
    from services.processes import stop_process

    server = _start_api(service_env, tmp_path_factory.mktemp("api") / "api.log")
    yield server
    stop_process(server.process)


@pytest.fixture(scope="session")
def start_api(service_env, tmp_path_factory) -> Iterator[Callable[..., ApiServer]]:
    """Starts an extra API with settings of its own (`start_api(name, LENSQ_X="1")`); all are stopped at the end."""
    from services.processes import stop_process

    servers: list[ApiServer] = []

    def start(name: str, **env: str) -> ApiServer:
        server = _start_api({**service_env, **env}, tmp_path_factory.mktemp(name) / "api.log")
        servers.append(server)
        return server

    yield start
    for server in servers:
        stop_process(server.process)


@pytest.fixture(scope="session")
def unserved_api(service_env, tmp_path_factory) -> Iterator[ApiServer]:
    """The API with a queue prefix no worker serves: its jobs stay queued, so API tests are deterministic."""
    from services.processes import stop_process

    env = {**service_env, "LENSQ_QUEUE_PREFIX": "unserved"}
    server = _start_api(env, tmp_path_factory.mktemp("unserved-api") / "api.log")
    yield server
    stop_process(server.process)


@pytest.fixture(scope="session")
def reference_pipeline(service_env):
    """The model the workers load (`load_pipeline(LENSQ_MODEL)`), loaded here too: tests compare against it.

    Loading it first also means a missing checkpoint fails the worker tests at once, with the reason."""
    import torch

    from multimodal import load_pipeline

    torch.set_num_threads(1)
    return load_pipeline(service_env["LENSQ_MODEL"], device="cpu")


@pytest.fixture(scope="session")
def worker_pool(service_env, tmp_path_factory, reference_pipeline) -> Iterator[WorkerPool]:
    """The run's Celery workers; tests ask for how many they need with pool.ensure(n)."""
    pool = WorkerPool(env=service_env, log_dir=tmp_path_factory.mktemp("workers"))
    yield pool
    pool.stop_all()


@pytest.fixture
def two_workers(worker_pool) -> list[Worker]:
    return worker_pool.ensure(2)

