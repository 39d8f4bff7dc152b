"""Real Celery worker subprocesses for the tests and the chaos run: started, awaited, killed, stopped."""
from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from services.processes import free_port, start_process, stop_process, worker_command


@dataclass
class Worker:
    """One Celery worker process (solo pool: one process, one model)."""

    name: str
    process: subprocess.Popen
    log_path: Path
    metrics_port: int | None = None  # its Prometheus endpoint (LENSQ_METRICS_PORT)

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    @property
    def pid(self) -> int:
        return self.process.pid

    def ready(self) -> bool:
        """Whether Celery logged 'ready'; raises with the log's tail if the process already exited."""
        if self.process.poll() is not None:
            raise RuntimeError(f"{self.name} exited: {self.log_path.read_text(errors='replace')[-3000:]}")
        return self.log_path.exists() and " ready." in self.log_path.read_text(errors="replace")


@dataclass
class WorkerPool:
    """Worker subprocesses sharing one environment; every log is kept, also of workers killed or replaced."""

    env: dict[str, str]
    log_dir: Path
    name_prefix: str = "w"
    queues: list[str] | None = None  # the queues its workers serve (e.g. the train queue); None: every task queue
    ready_timeout: float = 120
    workers: list[Worker] = field(default_factory=list)
    started: list[Worker] = field(default_factory=list)

    def start(self, count: int = 1) -> list[Worker]:
        new = []
        for _ in range(count):
            number = len(self.started) + 1
            name, log_path = f"{self.name_prefix}{number}@test", self.log_dir / f"worker-{number}.log"
            port = free_port()  # every worker serves its metrics, on a port of its own
            env = {**self.env, "LENSQ_METRICS_PORT": str(port), "LENSQ_METRICS_HOST": "127.0.0.1"}
            command = worker_command(name=name, queues=self.queues)
            worker = Worker(name, start_process(command, env=env, log_path=log_path), log_path, port)
            self.started.append(worker)
            new.append(worker)
        deadline = time.monotonic() + self.ready_timeout
        while not all(w.ready() for w in new):
            if time.monotonic() > deadline:
                raise TimeoutError(f"workers not ready after {self.ready_timeout:.0f}s")
            time.sleep(0.2)
        self.workers.extend(new)
        return new

    def alive(self) -> list[Worker]:
        return [w for w in self.workers if w.process.poll() is None]

    def ensure(self, count: int) -> list[Worker]:
        """At least `count` live workers."""
        self.workers = self.alive()
        if len(self.workers) < count:
            self.start(count - len(self.workers))
        return self.workers

    def kill_hard(self, worker: Worker, timeout: float = 10) -> None:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.process.wait(timeout=timeout)

    def terminate(self, worker: Worker, timeout: float = 120) -> int:
        """SIGTERM to the worker alone (Celery's warm shutdown); returns its exit status."""
        os.kill(worker.pid, signal.SIGTERM)
        return worker.process.wait(timeout=timeout)

    def stop_all(self) -> None:
        for worker in self.workers:
            stop_process(worker.process)
        self.workers = []

    def logs(self) -> str:
        return "".join(w.log_path.read_text(errors="replace") for w in self.started if w.log_path.exists())
