"""A throwaway service stack for a benchmark: a fresh Postgres database, a free Redis DB, the API, workers."""
from __future__ import annotations

import os
import secrets
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from services.processes import api_command, free_port, start_process, stop_process, wait_until_ready, worker_command

PG_ADMIN_URL = os.environ.get("LENSQ_BENCH_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_HOST = os.environ.get("LENSQ_BENCH_REDIS_HOST", "127.0.0.1")


def create_database(prefix: str = "lensq_bench") -> str:
    """A new, empty Postgres database; returns its SQLAlchemy URL."""
    import psycopg

    name = f"{prefix}_{os.getpid()}_{secrets.token_hex(3)}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    return PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://") + f"/{name}"


def drop_database(url: str) -> None:
    import psycopg

    from db.session import get_engine

    get_engine(url).dispose()
    name = url.rsplit("/", 1)[1]
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def claim_redis_db() -> int:
    """A Redis DB number (1..15) that is empty and not held by a test run or another benchmark."""
    import redis

    for number in range(15, 0, -1):  # from the top: test runs claim from 1 upwards
        client = redis.Redis(host=REDIS_HOST, db=number)
        if client.dbsize() == 0 and client.set("lensq-test-run", os.getpid(), nx=True, ex=3600):
            return number
    raise RuntimeError("no free Redis DB in 1..15")


def release_redis_db(number: int) -> None:
    import redis

    redis.Redis(host=REDIS_HOST, db=number).flushdb()


@dataclass
class Stack:
    """A database, a broker DB, and the processes started on them; stop() ends them all and drops the database."""

    env: dict[str, str]
    database_url: str
    redis_db: int
    log_dir: Path
    processes: list = field(default_factory=list)
    api_url: str | None = None

    @classmethod
    def create(cls, extra_env: dict[str, str] | None = None, migrate: bool = True) -> Stack:
        database_url = create_database()
        if migrate:
            from db.migrate import upgrade

            upgrade(database_url)
        redis_db = claim_redis_db()
        env = {
            "LENSQ_DATABASE_URL": database_url, "LENSQ_BROKER_URL": f"redis://{REDIS_HOST}:6379/{redis_db}",
            "LENSQ_DEVICE": "cpu", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
            # A benchmark client is one key sending thousands of requests a minute: lift the per-key rate limit.
            "LENSQ_KEY_RATE_LIMIT_PER_MINUTE": "10000000", "LENSQ_KEY_RATE_LIMIT_CEILING": "10000000",
            "LENSQ_TENANT_MAX_ACTIVE_JOBS": "1000000",
            **(extra_env or {}),
        }
        return cls(env=env, database_url=database_url, redis_db=redis_db,
                   log_dir=Path(tempfile.mkdtemp(prefix="lensq-bench-")))

    def start_api(self, module: str | None = None) -> str:
        """The LensQ API (or `module:app` under uvicorn) on a free port; returns its base URL."""
        port = free_port()
        command = api_command(port=port) if module is None else api_command(port=port)[:3] + [
            module, "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning", "--no-access-log"]
        log_path = self.log_dir / f"api-{port}.log"
        process = start_process(command, env=self.env, log_path=log_path)
        self.processes.append(process)
        url = f"http://127.0.0.1:{port}"
        wait_until_ready(f"{url}/healthz", process=process, timeout=120, log_path=log_path)
        self.api_url = url
        return url

    def start_workers(self, count: int, command: list[str] | None = None, env: dict[str, str] | None = None,
                      timeout: float = 300) -> None:
        """`count` Celery workers (LensQ's by default), waited for until each logged ' ready.'."""
        logs = []
        for _ in range(count):
            number = len(self.processes) + 1
            log_path = self.log_dir / f"worker-{number}.log"
            argv = command or worker_command(name=f"bench{number}@%h")
            self.processes.append(start_process(argv, env={**self.env, **(env or {})}, log_path=log_path))
            logs.append((self.processes[-1], log_path))
        deadline = time.monotonic() + timeout
        for process, log_path in logs:
            while " ready." not in (log_path.read_text(errors="replace") if log_path.exists() else ""):
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"worker not ready: {log_path.read_text(errors='replace')[-3000:]}")
                time.sleep(0.2)

    def stop_processes(self) -> None:
        for process in self.processes:
            stop_process(process)
        self.processes = []

    def stop(self) -> None:
        self.stop_processes()
        drop_database(self.database_url)
        release_redis_db(self.redis_db)


def new_tenant_token(database_url: str) -> str:
    """A fresh tenant with one API key (submit and read); returns the key's token."""
    from db.queries import create_api_key, get_or_create_tenant
    from db.session import session_scope

    with session_scope(database_url) as session:
        tenant = get_or_create_tenant(session, name=f"bench-{uuid.uuid4().hex[:8]}")
        _, token = create_api_key(session, tenant_id=tenant.id, name="bench")
    return token


def api_client(url: str, token: str, **options) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=url, headers=headers, timeout=120, **options)
