"""`lensq demo`: the embedded default end to end (SQLite, Celery over SQLAlchemy, one worker, the HTTP API)."""
from __future__ import annotations

import importlib.util
import json
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from db.migrate import upgrade
from db.queries import create_api_key, get_or_create_tenant
from db.session import session_scope
from services.client import FINAL, LensqClient, image_data_url
from services.processes import api_command, free_port, start_process, stop_process, wait_until_ready, worker_command

TASKS = ("caption", "vqa", "sentiment", "classify")


def samples_folder() -> Path:
    """multimodal/samples, found without importing multimodal (which would import torch)."""
    spec = importlib.util.find_spec("multimodal")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the multimodal package is not installed")
    return Path(list(spec.submodule_search_locations)[0]) / "samples"


@dataclass(frozen=True)
class DemoJob:
    """One demo submission and what it asked."""

    image: str
    task: str
    asked: str
    job_id: str


def _fields_for(task: str, sample: dict) -> tuple[dict, str]:
    if task == "vqa":
        return {"question": sample["question"]}, sample["question"]
    if task == "sentiment":
        return {"text": sample["text"]}, sample["text"]
    if task == "classify":
        return {"labels": sample["labels"]}, " | ".join(sample["labels"])
    return {}, ""


def submit_samples(client: LensqClient, folder: Path) -> list[DemoJob]:
    """Every sample image, once per task, through POST /v1/jobs."""
    manifest = json.loads((folder / "samples.json").read_text())
    submitted = []
    for name, sample in manifest.items():
        image = image_data_url((folder / name).read_bytes())
        for task in TASKS:
            fields, asked = _fields_for(task, sample)
            job = client.submit_job({"task": task, "image": image, "ref": name, **fields})
            submitted.append(DemoJob(image=name, task=task, asked=asked, job_id=job["id"]))
    return submitted


def wait_for_all(client: LensqClient, jobs: list[DemoJob], *, timeout: float, stall_timeout: float,
                 worker_alive: Callable[[], bool]) -> dict[str, dict]:
    """Every job once final; gives up at `timeout`, after `stall_timeout` without progress, or if the worker dies."""
    started = last_progress = time.monotonic()
    finished: dict[str, dict] = {}
    reported = -1
    while len(finished) < len(jobs) and worker_alive():
        for job in jobs:
            if job.job_id not in finished and (row := client.get_job(job.job_id))["status"] in FINAL:
                finished[job.job_id] = row
        now = time.monotonic()
        if len(finished) != reported:
            reported, last_progress = len(finished), now
            print(f"  {reported}/{len(jobs)} jobs done", flush=True)
        if now - started > timeout or now - last_progress > stall_timeout:
            break
        if len(finished) < len(jobs):
            time.sleep(0.5)
    return finished


def describe_result(job: dict | None) -> str:
    """A short readable form of a job's outcome."""
    if job is None:
        return "(not finished)"
    if job["status"] != "succeeded":
        return f"{job['status'].upper()}: {job['error']}"
    result = job["result"]
    if "caption" in result or "answer" in result:
        return result.get("caption", result.get("answer")) or "(empty)"
    scores = result.get("probabilities") or result.get("scores") or {}
    return f"{result['label']} ({scores.get(result['label'], 0):.2f})"


def print_table(jobs: list[DemoJob], finished: dict[str, dict]) -> None:
    """The results as an aligned text table."""
    rows = [("image", "task", "input", "result")]
    rows += [(j.image, j.task, j.asked[:44], describe_result(finished.get(j.job_id))[:60]) for j in jobs]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for index, row in enumerate(rows):
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
        if index == 0:
            print("  ".join("-" * width for width in widths))
    version = next((f["model_version"] for f in finished.values() if f.get("model_version")), "?")
    print(f"\nmodel: {version}")


def _prepare(workdir: Path) -> tuple[dict[str, str], str]:
    """A fresh SQLite ledger and broker in `workdir`, migrated, with a demo tenant; the env and API key."""
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    database_url = f"sqlite:///{workdir.resolve() / 'lensq.db'}"
    env = {"LENSQ_DATABASE_URL": database_url, "LENSQ_BROKER_URL": f"sqla+sqlite:///{workdir.resolve() / 'broker.db'}",
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "LENSQ_SWEEP_INTERVAL_SECONDS": "2"}
    upgrade(database_url)
    with session_scope(database_url) as session:
        tenant = get_or_create_tenant(session, name="demo")
        _, token = create_api_key(session, tenant_id=tenant.id, name="demo")
    return env, token


def run_demo(workdir: Path = Path(".lensq/demo"), *, timeout: float = 480) -> int:
    """Runs the whole embedded demo; 0 when every job succeeded."""
    print(f"LensQ demo: SQLite ledger + Celery over SQLAlchemy in {workdir}/")
    env, token = _prepare(workdir)
    jobs, finished = [], {}
    port = free_port()
    api = start_process(api_command(port=port), env=env, log_path=workdir / "api.log")
    worker = start_process(worker_command(name="demo@%h", log_level="WARNING"), env=env, log_path=workdir / "worker.log")
    client = LensqClient(f"http://127.0.0.1:{port}", token)
    try:
        wait_until_ready(f"http://127.0.0.1:{port}/readyz", process=api, timeout=60, log_path=workdir / "api.log")
        print(f"API on http://127.0.0.1:{port} (docs at /docs); one worker; submitting the samples...")
        jobs = submit_samples(client, samples_folder())
        finished = wait_for_all(client, jobs, timeout=timeout, stall_timeout=min(timeout, 180),
                                worker_alive=lambda: worker.poll() is None)
        print_table(jobs, finished)
    finally:
        client.close()
        stop_process(worker)
        stop_process(api)
    ok = len(finished) == len(jobs) and all(job["status"] == "succeeded" for job in finished.values())
    if not ok:
        worker_log = (workdir / "worker.log").read_text(errors="replace")[-2000:]
        print(f"some jobs did not succeed; logs in {workdir}/\n--- worker.log (end) ---\n{worker_log}", file=sys.stderr)
    return 0 if ok else 1
