"""Benchmark 6: a worker's RSS with each checkpoint loaded, and its growth over many jobs."""
from __future__ import annotations

import argparse
import hashlib
import os
import time

from benchmarks.figures import table, write_section
from benchmarks.images import easy_vqa_items, png_bytes
from benchmarks.stack import Stack

TASK_PARAMS = (("caption", {}), ("vqa", {"question": "what shape is in the image?"}),
               ("sentiment", {"text": "what a lovely day"}), ("classify", {"labels": ["circle", "triangle"]}))


def rss_mib(pid: int) -> float:
    """Resident set size of a process, from /proc (Linux)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def enqueue(stack: Stack, images: list[bytes], count: int, start: int) -> None:
    """`count` jobs over the four tasks written straight into the ledger (the API is not what is measured)."""
    os.environ.update(stack.env)  # the broker URL, before workers.celery_app reads its settings
    from db.queries import ImageFacts, NewJob, get_or_create_tenant, insert_jobs, store_image
    from db.session import session_scope
    from workers.celery_app import ring_for_new_jobs
    from workers.config import queue_for_task

    jobs = []
    with session_scope(stack.database_url) as session:
        tenant = get_or_create_tenant(session, name="memory")
        for index in range(start, start + count):
            data = images[index % len(images)]
            sha256 = hashlib.sha256(data).hexdigest()
            store_image(session, tenant_id=tenant.id, image=ImageFacts(data, sha256, "PNG", 64, 64))
            task, params = TASK_PARAMS[index % len(TASK_PARAMS)]
            jobs.append(NewJob(task=task, queue=queue_for_task(task), params=params, image_sha256=sha256))
        insert_jobs(session, tenant_id=tenant.id, jobs=jobs, max_attempts=3)
    ring_for_new_jobs({queue_for_task(task): count for task, _ in TASK_PARAMS})


def wait_finished(stack: Stack, total: int, timeout: float = 3600) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(stack.database_url)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with engine.connect() as connection:
            if connection.execute(text("SELECT count(*) FROM jobs WHERE finished_at IS NOT NULL")).scalar() >= total:
                return
        time.sleep(0.5)
    raise TimeoutError("jobs did not finish")


def run_jobs(stack: Stack, images: list[bytes], count: int, done_before: int) -> int:
    enqueue(stack, images, count, done_before)
    wait_finished(stack, done_before + count)
    return done_before + count


def measure(model: str, jobs: int, images: list[bytes], warm_up: int) -> dict:
    """RSS once loaded, after `warm_up` jobs (every task at full batch size, so the allocator has seen the largest
    activations), after half the jobs and after all of them: growth after warm-up is what a leak would show."""
    stack = Stack.create({"LENSQ_MODEL": model})
    try:
        stack.start_workers(1)
        pid = stack.processes[0].pid
        loaded = rss_mib(pid)
        done = run_jobs(stack, images, warm_up, 0)
        after_warm_up = rss_mib(pid)
        done = run_jobs(stack, images, jobs // 2, done)
        halfway = rss_mib(pid)
        run_jobs(stack, images, jobs - jobs // 2, done)
        final = rss_mib(pid)
    finally:
        stack.stop()
    return {"loaded_mib": loaded, "after_warm_up_mib": after_warm_up, "halfway_mib": halfway, "final_mib": final,
            "jobs": jobs, "warm_up_jobs": warm_up, "growth": (final - after_warm_up) / after_warm_up}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=10_000, help="jobs after warm-up, lensq-tiny")
    parser.add_argument("--smol-jobs", type=int, default=10_000, help="jobs after warm-up, lensq-smol")
    parser.add_argument("--json")
    parser.add_argument("--smoke", action="store_true", help="lensq-tiny, 8 jobs")
    args = parser.parse_args(argv)
    images = [png_bytes(image) for image, _ in easy_vqa_items(8 if args.smoke else 1000)]
    plan = [("lensq-tiny", 8)] if args.smoke else [("lensq-tiny", args.jobs), ("lensq-smol", args.smol_jobs)]
    # Warm-up: two full batches (32 jobs) of each of the four tasks.
    warm_up = 8 if args.smoke else 4 * 2 * 32
    figures = {model: measure(model, jobs, images, warm_up) for model, jobs in plan}
    rows = [[model, f"{f['loaded_mib']:.0f} MiB", f"{f['after_warm_up_mib']:.0f} MiB", f['jobs'],
             f"{f['halfway_mib']:.0f} MiB", f"{f['final_mib']:.0f} MiB", f"**{100 * f['growth']:+.1f}%**"]
            for model, f in figures.items()]
    markdown = (
        f"RSS of one Celery worker process (solo pool) read from /proc: once the model is loaded, after {warm_up} "
        "warm-up jobs (two full batches of each task: the allocator has then seen the largest activations), halfway "
        "through the jobs and after them. Jobs cycle over the four tasks and 1,000 distinct easy-VQA images "
        "(so the embedding LRU, 256 entries, fills and evicts), written straight into the ledger: "
        f"{args.jobs:,} jobs on lensq-tiny and {args.smol_jobs:,} on lensq-smol after the warm-up. Target: growth "
        "< 5% over 10,000 jobs.\n\n"
        + table(["checkpoint", "RSS loaded", "after warm-up", "jobs after warm-up", "halfway", "after the jobs",
                 "growth after warm-up"], rows))
    write_section(args.json, "6. Worker memory", markdown, figures)
    return figures


if __name__ == "__main__":
    main()
