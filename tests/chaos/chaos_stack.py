"""The chaos run's own Postgres cluster, Redis server, API and Celery workers, each one stoppable and restartable."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from services.processes import api_command, free_port, start_process, stop_process, wait_until_ready

CLUSTER_PREFIX = "lensq_chaos_"


def missing_tools() -> list[str]:
    """The programs a chaos run needs that this machine lacks (Debian's Postgres cluster tools, redis-server)."""
    needed = ("pg_createcluster", "pg_ctlcluster", "pg_dropcluster", "pg_lsclusters", "redis-server")
    return [name for name in needed if shutil.which(name) is None]


def _run(*command: str) -> str:
    return subprocess.run(command, check=True, capture_output=True, text=True, timeout=120).stdout


def _postgres_version() -> str:
    """The newest Postgres major version installed (Debian keeps each under /usr/lib/postgresql/<major>)."""
    versions = [p.name for p in Path("/usr/lib/postgresql").glob("*") if p.name.isdigit()]
    if not versions:
        raise RuntimeError("no Postgres server is installed")
    return max(versions, key=int)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def drop_abandoned_clusters() -> None:
    """Drops chaos clusters left by runs whose process is gone (a run killed before its cleanup)."""
    for line in _run("pg_lsclusters", "-h").splitlines():
        version, name = line.split()[:2]
        match = re.fullmatch(rf"{CLUSTER_PREFIX}(\d+)_\w+", name)
        if match and not _pid_alive(int(match.group(1))):
            subprocess.run(["pg_dropcluster", "--stop", version, name], capture_output=True, timeout=120)


@dataclass
class PostgresCluster:
    """A throwaway Postgres cluster of this run, on its own port, trust auth on localhost."""

    version: str
    name: str
    port: int

    @classmethod
    def create(cls) -> PostgresCluster:
        drop_abandoned_clusters()
        cluster = cls(version=_postgres_version(), name=f"{CLUSTER_PREFIX}{os.getpid()}_{os.urandom(3).hex()}",
                      port=free_port())
        _run("pg_createcluster", cluster.version, cluster.name, "-p", str(cluster.port), "--start-conf=manual",
             "--", "--auth=trust")
        cluster.start()
        import psycopg

        with psycopg.connect(f"postgresql://postgres@127.0.0.1:{cluster.port}/postgres", autocommit=True) as conn:
            conn.execute("CREATE DATABASE lensq")
        return cluster

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/lensq"

    def start(self) -> None:
        _run("pg_ctlcluster", self.version, self.name, "start")

    def stop(self) -> None:
        _run("pg_ctlcluster", self.version, self.name, "stop", "-m", "fast")

    def drop(self) -> None:
        subprocess.run(["pg_dropcluster", "--stop", self.version, self.name], capture_output=True, timeout=120)


@dataclass
class RedisServer:
    """This run's redis-server, append-only in its own folder, so a restart keeps what it held."""

    folder: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        command = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.folder),
                   "--appendonly", "yes", "--save", "", "--maxmemory-policy", "noeviction"]
        self.process = start_process(command, env={}, log_path=self.folder / "redis.log")
        import redis

        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if redis.Redis(port=self.port).ping():
                    return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise TimeoutError("redis-server did not answer")

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)  # SIGTERM: Redis syncs its append-only file and exits


@dataclass
class ApiServer:
    """The API under uvicorn, on a fixed port so a restart comes back at the same address."""

    env: dict[str, str]
    log_path: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.process = start_process(api_command(port=self.port), env=self.env, log_path=self.log_path)
        wait_until_ready(f"{self.url}/healthz", process=self.process, timeout=90, log_path=self.log_path)

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)
