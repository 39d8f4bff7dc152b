"""Chaos: 500 jobs through the API while workers die and Redis, Postgres and the API restart; each job ends once.

The run has its own Postgres cluster and redis-server (restarting them touches nothing else on the machine).
Figures (duplicates, recovery per fault) are printed and saved as JSON: `python -m pytest -m chaos -s`."""
from __future__ import annotations

import json
import os
import re
import signal
import threading
import time
import uuid
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, field

import httpx
import pytest
from sqlalchemy import func, select

from db.models import Job
from image_factory import data_url, shape_png
from polling import wait_until
from worker_processes import WorkerPool
from chaos_stack import ApiServer, PostgresCluster, RedisServer, missing_tools

pytestmark = pytest.mark.chaos

JOBS = 500
SINGLES_PER_WAVE = 4  # the rest of a wave goes through the batch endpoint
ENV = {
    "LENSQ_LEASE_SECONDS": "5",
    "LENSQ_SWEEP_INTERVAL_SECONDS": "1",
    "LENSQ_STALE_QUEUED_SECONDS": "3",
    "LENSQ_BATCH_SIZE": "16",
    "LENSQ_MODEL": "lensq-tiny",
    "LENSQ_DEVICE": "cpu",
    "OMP_NUM_THREADS": "1",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
}
TASK_FIELDS = [
    ("caption", {}), ("caption", {}), ("vqa", {"question": "what shape is it?"}),
    ("sentiment", {"text": "what a lovely day"}), ("classify", {"labels": ["circle", "rectangle", "triangle"]}),
]


# --- the run's own services -----------------------------------------------------------------------

@dataclass
class Stack:
    postgres: PostgresCluster
    redis: RedisServer
    api: ApiServer
    workers: WorkerPool
    session_factory: object
    submit_token: str
    poll_token: str
    tenant_id: uuid.UUID


def _tenant_with_two_keys(session_factory) -> tuple[uuid.UUID, str, str]:
    from db.queries import create_api_key, get_or_create_tenant

    with session_factory.begin() as session:
        tenant = get_or_create_tenant(session, name="chaos")
        _, submit = create_api_key(session, tenant_id=tenant.id, name="submitter")
        _, poll = create_api_key(session, tenant_id=tenant.id, name="poller")
        return tenant.id, submit, poll


@pytest.fixture
def stack(tmp_path):
    if missing := missing_tools():
        pytest.skip(f"the chaos run needs {', '.join(missing)} (Debian: postgresql-common, redis-server)")
    from db.migrate import upgrade
    from db.session import get_engine, get_session_factory

    with ExitStack() as cleanup:
        postgres = PostgresCluster.create()
        cleanup.callback(postgres.drop)
        cleanup.callback(lambda: get_engine(postgres.url).dispose())
        upgrade(postgres.url)
        redis = RedisServer(folder=tmp_path)
        redis.start()
        cleanup.callback(redis.stop)
        env = {**ENV, "LENSQ_DATABASE_URL": postgres.url, "LENSQ_BROKER_URL": redis.url}
        session_factory = get_session_factory(postgres.url)
        tenant_id, submit, poll = _tenant_with_two_keys(session_factory)
        api = ApiServer(env=env, log_path=tmp_path / "api.log")
        cleanup.callback(api.stop)
        api.start()
        workers = WorkerPool(env=env, log_dir=tmp_path, name_prefix="chaos", ready_timeout=150)
        cleanup.callback(workers.stop_all)
        workers.start(2)
        yield Stack(postgres, redis, api, workers, session_factory, submit, poll, tenant_id)


# --- every answer the API gives ------------------------------------------------------------------

@dataclass
class Answers:
    """Every status code the API gave during the run (0: no answer at all), and 503s without Retry-After."""

    rows: list[tuple[float, str, int]] = field(default_factory=list)
    bad_503: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def send(self, http: httpx.Client, method: str, path: str, **kwargs) -> httpx.Response | None:
        try:
            response = http.request(method, path, **kwargs)
        except httpx.HTTPError:
            self._add(path, 0)
            return None
        self._add(path, response.status_code)
        if response.status_code == 503 and path.startswith("/v1") and not _is_retry_later(response):
            self.bad_503.append(f"{method} {path}: {response.headers} {response.text[:200]}")
        return response

    def _add(self, path: str, status: int) -> None:
        with self.lock:
            self.rows.append((time.time(), path.split("?")[0], status))

    def statuses(self) -> Counter:
        return Counter(status for _, _, status in self.rows)

    def during(self, start: float, end: float, status: int) -> int:
        return sum(1 for at, path, s in self.rows if start <= at <= end and s == status and path.startswith("/v1"))


def _is_retry_later(response: httpx.Response) -> bool:
    try:
        return int(response.headers["Retry-After"]) > 0 and "error" in response.json()
    except (KeyError, ValueError):
        return False


class Poller(threading.Thread):
    """Reads the API five times a second throughout the run, as a client would."""

    def __init__(self, url: str, token: str, answers: Answers):
        super().__init__(name="chaos-poller", daemon=True)
        self.url, self.token, self.answers = url, token, answers
        self.batch_id: str | None = None
        self.stopped = threading.Event()

    def run(self) -> None:
        with httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {self.token}"}, timeout=10) as http:
            while not self.stopped.wait(0.2):
                self.answers.send(http, "GET", "/readyz")
                self.answers.send(http, "GET", "/v1/jobs?limit=5")
                if self.batch_id:
                    self.answers.send(http, "GET", f"/v1/batches/{self.batch_id}")


# --- submitting 500 jobs ---------------------------------------------------------------------------

def _items(start: int, count: int) -> list[dict]:
    items = []
    for index in range(start, start + count):
        task, fields = TASK_FIELDS[index % len(TASK_FIELDS)]
        items.append({"task": task, "image": data_url(shape_png(index)), "ref": f"chaos-{index}", **fields})
    return items


def _post_until_taken(http: httpx.Client, answers: Answers, path: str, body: dict, deadline: float) -> dict:
    """POSTs with one Idempotency-Key until the API takes it: a retry after a lost answer is a replay, not a copy."""
    headers = {"Idempotency-Key": uuid.uuid4().hex}
    while time.monotonic() < deadline:
        response = answers.send(http, "POST", path, json=body, headers=headers)
        if response is not None and response.status_code in (200, 202):
            return response.json()
        if response is not None and response.status_code not in (429, 500, 503):
            pytest.fail(f"POST {path} refused: {response.status_code} {response.text[:300]}")
        time.sleep(0.3)
    pytest.fail(f"POST {path} not taken before the deadline")


def _client(stack: Stack, token: str) -> httpx.Client:
    return httpx.Client(base_url=stack.api.url, headers={"Authorization": f"Bearer {token}"}, timeout=30)


def submit_singles(stack: Stack, answers: Answers, items: list[dict]) -> None:
    """Jobs posted one by one to /v1/jobs."""
    deadline = time.monotonic() + 120
    with _client(stack, stack.submit_token) as http:
        for item in items:
            _post_until_taken(http, answers, "/v1/jobs", item, deadline)


def submit_wave(stack: Stack, answers: Answers, poller: Poller, start: int, count: int) -> list[dict]:
    """Posts `count` jobs as one batch, except a few it returns to be posted one by one."""
    items = _items(start, count)
    with _client(stack, stack.submit_token) as http:
        batch = _post_until_taken(http, answers, "/v1/batches", {"items": items[SINGLES_PER_WAVE:]},
                                  time.monotonic() + 120)
    poller.batch_id = batch["id"]
    return items[:SINGLES_PER_WAVE]


def _waves() -> list[tuple[int, int]]:
    """(first index, count) of each wave, together exactly JOBS: one wave per fault, and a last one after them."""
    waves = len(FAULTS) + 1
    size = JOBS // waves
    return [(i * size, size if i < waves - 1 else JOBS - i * size) for i in range(waves)]


# --- the faults ------------------------------------------------------------------------------------

def _running_by_pid(session_factory) -> dict[int, list[uuid.UUID]]:
    with session_factory() as session:
        rows = session.execute(select(Job.id, Job.lease_owner).where(Job.status == "running")).all()
    held: dict[int, list[uuid.UUID]] = {}
    for job_id, owner in rows:
        held.setdefault(int(owner.rsplit("/", 1)[1]), []).append(job_id)
    return held


def _worker_mid_batch(stack: Stack):
    """A live worker holding leased jobs right now, or None."""
    held = _running_by_pid(stack.session_factory)
    return next((w for w in stack.workers.alive() if held.get(w.pid)), None)


def kill_mid_batch(stack: Stack, answers: Answers, singles: list[dict]) -> dict:
    victim = wait_until(lambda: _worker_mid_batch(stack), timeout=90, interval=0.02, what="a worker mid-batch")
    at = time.time()
    stack.workers.kill_hard(victim, timeout=30)
    orphaned = _running_by_pid(stack.session_factory).get(victim.pid, [])
    submit_singles(stack, answers, singles)
    stack.workers.start(1)
    return {"fault": "kill -9 worker mid-batch", "at": at, "orphaned": orphaned}


def _moved_away(stack: Stack, job_ids: list[uuid.UUID], pid: int) -> int:
    """How many of these jobs are no longer running under the worker `pid` (re-queued, re-run or done)."""
    return len(job_ids) - len(set(job_ids) & set(_running_by_pid(stack.session_factory).get(pid, [])))


def pause_past_lease(stack: Stack, answers: Answers, singles: list[dict]) -> dict:
    """SIGSTOP a worker mid-batch until its lease lapses and its jobs run elsewhere, then SIGCONT: a late duplicate."""
    victim = wait_until(lambda: _worker_mid_batch(stack), timeout=90, interval=0.02, what="a worker mid-batch")
    at = time.time()
    os.kill(victim.pid, signal.SIGSTOP)
    held = _running_by_pid(stack.session_factory).get(victim.pid, [])
    submit_singles(stack, answers, singles)
    # Normally lease + one sweep; a worker stopped inside its write holds row locks the sweeper skips: give up then.
    deadline = time.monotonic() + float(ENV["LENSQ_LEASE_SECONDS"]) + 10
    while _moved_away(stack, held, victim.pid) < len(held) and time.monotonic() < deadline:
        time.sleep(0.2)
    moved = _moved_away(stack, held, victim.pid)
    os.kill(victim.pid, signal.SIGCONT)
    return {"fault": "pause worker past its lease", "at": at, "orphaned": held, "paused_s": round(time.time() - at, 2),
            "rerun_elsewhere": moved}


def terminate_mid_batch(stack: Stack, answers: Answers, singles: list[dict]) -> dict:
    victim = wait_until(lambda: _worker_mid_batch(stack), timeout=90, interval=0.02, what="a worker mid-batch")
    at = time.time()
    status = stack.workers.terminate(victim)
    left = _running_by_pid(stack.session_factory).get(victim.pid, [])
    fault = {"fault": "SIGTERM worker mid-batch", "at": at, "exit_status": status,
             "shutdown_s": round(time.time() - at, 2), "left_running": len(left)}
    submit_singles(stack, answers, singles)
    stack.workers.start(1)
    return fault


def restart_redis(stack: Stack, answers: Answers, singles: list[dict]) -> dict:
    """Redis down for a couple of seconds, jobs submitted meanwhile (stored, their doorbell rung later), then up."""
    at = time.time()
    stack.redis.stop()
    submit_singles(stack, answers, singles)
    time.sleep(max(0.0, at + 2 - time.time()))
    stack.redis.start()
    return {"fault": "restart Redis", "at": at, "down_s": round(time.time() - at, 2),
            "accepted_while_down": answers.during(at, time.time(), 202)}


def restart_postgres(stack: Stack, answers: Answers, singles: list[dict]) -> dict:
    at = time.time()
    stack.postgres.stop()
    with _client(stack, stack.poll_token) as http:
        # Hold the outage until a client has seen the API answer 503 for it (a few seconds at most).
        wait_until(lambda: (r := answers.send(http, "GET", "/v1/jobs?limit=1")) is not None and r.status_code == 503,
                   timeout=15, interval=0.2, what="a 503 while Postgres is down")
    time.sleep(1)
    stack.postgres.start()
    fault = {"fault": "restart Postgres", "at": at, "down_s": round(time.time() - at, 2),
             "api_503_during_outage": answers.during(at, time.time(), 503)}
    submit_singles(stack, answers, singles)
    return fault


def restart_api(stack: Stack, answers: Answers, singles: list[dict]) -> dict:
    at = time.time()
    stack.api.stop()
    stack.api.start()
    fault = {"fault": "restart API", "at": at, "down_s": round(time.time() - at, 2)}
    submit_singles(stack, answers, singles)
    return fault


# In order; each strikes while a fresh wave of jobs is in flight, and posts the wave's singles at its own moment.
FAULTS = (kill_mid_batch, kill_mid_batch, pause_past_lease, terminate_mid_batch, restart_redis, restart_postgres,
          restart_api)


# --- what the ledger and the logs say ------------------------------------------------------------------

def _tenant_jobs(stack: Stack) -> list[Job]:
    with stack.session_factory() as session:
        return list(session.scalars(select(Job).where(Job.tenant_id == stack.tenant_id)))


def _unfinished(stack: Stack) -> int:
    with stack.session_factory() as session:
        stmt = select(func.count()).select_from(Job).where(Job.tenant_id == stack.tenant_id,
                                                           Job.status.in_(["queued", "running"]))
        return session.scalar(stmt)


def _log_writes(stack: Stack) -> tuple[int, int]:
    """Results the workers committed and late results they discarded, summed over every worker's log."""
    pairs = re.findall(r"wrote (\d+) results, discarded (\d+)", stack.workers.logs())
    return sum(int(w) for w, _ in pairs), sum(int(d) for _, d in pairs)


def _recovery(fault: dict, finished: list[float], jobs_by_id: dict) -> dict:
    """Seconds from the fault to the first job finished after it (and to the last of the jobs it orphaned)."""
    at = fault["at"]
    after = [t for t in finished if t > at]
    figures = {k: v for k, v in fault.items() if k not in ("at", "orphaned")}
    figures["recovery_s"] = round(min(after) - at, 2) if after else None
    if "orphaned" in fault:
        figures["orphaned"] = len(fault["orphaned"])
        ends = [jobs_by_id[i].finished_at.timestamp() for i in fault["orphaned"]]
        figures["orphans_finished_s"] = round(max(ends) - at, 2) if ends else None
    return figures


def _figures(stack: Stack, faults: list[dict], answers: Answers, started: float) -> dict:
    jobs = _tenant_jobs(stack)
    by_id = {job.id: job for job in jobs}
    finished = sorted(job.finished_at.timestamp() for job in jobs if job.finished_at)
    written, discarded = _log_writes(stack)
    return {
        "jobs": len(jobs),
        "statuses": dict(Counter(job.status for job in jobs)),
        "error_codes": dict(Counter(job.error_code for job in jobs if job.error_code)),
        "executions": sum(job.attempts for job in jobs),
        "re_executions": sum(job.attempts - 1 for job in jobs if job.attempts > 1),
        "results_committed_by_workers": written,
        "late_results_discarded": discarded,
        "api_answers": {str(k): v for k, v in sorted(answers.statuses().items())},
        "faults": [_recovery(fault, finished, by_id) for fault in faults],
        "run_s": round(time.time() - started, 1),
    }


def _report(figures: dict, path) -> None:
    path.write_text(json.dumps(figures, indent=2))
    print(f"\nchaos figures ({path}):")
    print(f"  jobs {figures['jobs']} {figures['statuses']}; executions {figures['executions']}, "
          f"re-executed {figures['re_executions']}; results committed {figures['results_committed_by_workers']}, "
          f"duplicates discarded {figures['late_results_discarded']}; API answers {figures['api_answers']}")
    for fault in figures["faults"]:
        print(f"  {fault['fault']:<30} recovery {fault['recovery_s']}s  "
              + ", ".join(f"{k} {v}" for k, v in fault.items() if k not in ("fault", "recovery_s")))
    print(f"  run {figures['run_s']}s")


# --- the run --------------------------------------------------------------------------------------

def _run_faults(stack: Stack, answers: Answers, poller: Poller) -> list[dict]:
    """Every fault in turn, each with its wave of jobs; then the last wave."""
    waves = _waves()
    done = []
    for (start, count), fault in zip(waves, FAULTS):
        singles = submit_wave(stack, answers, poller, start, count)
        done.append(fault(stack, answers, singles))
    start, count = waves[-1]
    submit_singles(stack, answers, submit_wave(stack, answers, poller, start, count))
    kills = [f for f in done if f["fault"] == "kill -9 worker mid-batch"]
    for number, fault in enumerate(kills, 1):
        fault["fault"] += f" #{number}"
    return done


@pytest.mark.timeout(600)
def test_500_jobs_each_end_once_through_kills_and_restarts(stack, tmp_path):
    started = time.time()
    answers = Answers()
    poller = Poller(stack.api.url, stack.poll_token, answers)
    poller.start()
    try:
        faults = _run_faults(stack, answers, poller)
        wait_until(lambda: _unfinished(stack) == 0, timeout=180, interval=0.5, what="every job to finish")
    finally:
        poller.stopped.set()
        poller.join(timeout=15)
    figures = _figures(stack, faults, answers, started)
    _report(figures, tmp_path / "chaos-figures.json")

    jobs = _tenant_jobs(stack)
    assert len(jobs) == JOBS, "retried submissions were replays (Idempotency-Key), never copies"
    assert all(job.status == "succeeded" and job.result and job.error is None for job in jobs), figures["statuses"]
    assert figures["results_committed_by_workers"] <= JOBS, "a job's result was committed twice"
    codes = answers.statuses()
    assert not [c for c in codes if c >= 500 and c != 503], f"the API answered a 5xx other than 503: {codes}"
    assert answers.bad_503 == [], "a 503 without Retry-After or a JSON error"
    by_name = {fault["fault"]: fault for fault in figures["faults"]}
    assert by_name["restart Postgres"]["api_503_during_outage"] > 0
    assert by_name["restart Redis"]["accepted_while_down"] == SINGLES_PER_WAVE, "Redis down: jobs still taken"
    assert by_name["SIGTERM worker mid-batch"]["exit_status"] == 0
    assert by_name["SIGTERM worker mid-batch"]["left_running"] == 0, "a warm shutdown writes its batch"
    assert by_name["kill -9 worker mid-batch #1"]["orphaned"] + by_name["kill -9 worker mid-batch #2"]["orphaned"] > 0
    # The paused worker's batch ran again elsewhere; its own results, arriving late, were refused, one by one.
    assert figures["late_results_discarded"] == by_name["pause worker past its lease"]["rerun_elsewhere"]
