"""Starts and stops the API and Celery workers as subprocesses (used by the CLI, the demo and the tests)."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def free_port() -> int:
    """A TCP port on localhost that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def api_command(*, host: str = "127.0.0.1", port: int = 8000, log_level: str = "warning") -> list[str]:
    """The uvicorn command line serving the LensQ API."""
    return [sys.executable, "-m", "uvicorn", "services.app:create_app", "--factory", "--host", host,
            "--port", str(port), "--log-level", log_level, "--no-access-log"]


def worker_command(*, name: str = "lensq@%h", queues: list[str] | None = None, log_level: str = "INFO",
                   pool: str = "solo") -> list[str]:
    """The Celery worker command line: one process, one model (solo pool), every task queue by default.

    Without `queues` the worker serves the task queues of its own settings (its LENSQ_QUEUE_PREFIX)."""
    # Solo: the task runs in the worker's main thread, the one process that loads the model (and owns the GPU:
    # CUDA is not fork-safe), and the one SIGALRM can interrupt when a model call runs past its time limit.
    command = [sys.executable, "-m", "celery", "-A", "workers.celery_app", "worker", "-P", pool, "-n", name,
               "-l", log_level, "--without-gossip", "--without-mingle", "--without-heartbeat"]
    return command + (["-Q", ",".join(queues)] if queues else [])


def start_process(command: list[str], *, env: dict[str, str], log_path: Path, cwd: Path | None = None) -> subprocess.Popen:
    """Starts `command` in its own session (so it can be stopped with its children), output to `log_path`."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log_file:
        return subprocess.Popen(command, env={**os.environ, **env}, stdout=log_file, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, cwd=cwd, start_new_session=True)


def wait_until_ready(url: str, *, process: subprocess.Popen, timeout: float, log_path: Path | None = None) -> None:
    """Polls `url` until it answers 200; raises if the process exits or the deadline passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log_path.read_text(errors="replace")[-3000:] if log_path and log_path.exists() else ""
            raise RuntimeError(f"process exited with {process.returncode} before {url} was ready\n{tail}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} not ready after {timeout:.0f}s")


def stop_process(process: subprocess.Popen, *, timeout: float = 15) -> None:
    """SIGTERM to the process's group, then SIGKILL if it has not exited within `timeout`."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=timeout)
    except ProcessLookupError:
        pass
