"""Benchmarks 1, 4 (latency) and 7: LensQ vs the naive service end to end, service overhead, 1 vs 2 workers."""
from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import sys
import time
from datetime import datetime, timezone

from sqlalchemy import create_engine, text

from benchmarks.figures import median, percentile, table, timed, write_section
from benchmarks.images import QUESTIONS, easy_vqa_items, job_photos, png_bytes
from benchmarks.light_client import post_all
from benchmarks.process_cpu import CpuMeter, service_meter
from benchmarks.stack import Stack, api_client, new_tenant_token

CLIENT_CONCURRENCY = 8
# Both services' workers run torch on one thread: on 2 cores shared with the API, Postgres, Redis and the client,
# a second OpenMP thread mostly waits for a core that one of them holds.
WORKER_THREADS = {"OMP_NUM_THREADS": "1"}
CORES = os.cpu_count() or 1


def question_of(index: int) -> str:
    """The question VQA job number `index` asks."""
    return QUESTIONS[index % len(QUESTIONS)]


def job_body(task: str, image: bytes, index: int) -> dict:
    body = {"task": task, "image": "data:image/jpeg;base64," + base64.b64encode(image).decode()}
    return body | ({"question": question_of(index)} if task == "vqa" else {})


def encoded_bodies(task: str, images: list[bytes], shape=lambda body: body) -> list[bytes]:
    """Each job's request body as JSON bytes (`shape`: the service's own form of a job body), made before timing."""
    return [json.dumps(shape(job_body(task, image, index))).encode() for index, image in enumerate(images)]


def submitter(url: str, path: str, token: str):
    """A function that POSTs pre-encoded bodies to `path` from CLIENT_CONCURRENCY keep-alive connections
    (benchmarks.light_client, for both services) and returns the wall-clock start (time.time())."""
    def submit(bodies: list[bytes]) -> float:
        started = time.time()
        asyncio.run(post_all(url, path, token, bodies, CLIENT_CONCURRENCY))
        return started

    return submit


def wait_done(engine, sql: str, params: dict, want: int, timeout: float = 3600) -> float:
    """Polls until `sql` counts `want` finished rows; returns the latest finish time (epoch seconds)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with engine.connect() as connection:
            done, last = connection.execute(text(sql), params).one()
        if done >= want:
            return last.timestamp()
        time.sleep(0.1)
    raise TimeoutError(f"only {done} of {want} jobs finished")


# Jobs of the timed run only: created after it started (warm-up jobs are older).
LENSQ_DONE = ("SELECT count(*), max(finished_at) FROM jobs WHERE task = :task AND created_at >= :since AND status IN "
              "('succeeded', 'failed', 'cancelled')")
NAIVE_DONE = ("SELECT count(*), max(finished_at) FROM naive_jobs WHERE task = :task AND created_at >= :since "
              "AND status = 'succeeded'")
WARM_UP_JOBS = 4


def timed_rate(engine, submit, bodies: list[bytes], task: str, done_sql: str, warm_up: int,
               meter: CpuMeter) -> tuple[float, dict[str, float]]:
    """Jobs/s of the `task` jobs in `bodies`, after `warm_up` jobs (first calls allocate and fill caches), and the
    CPU ms per job of each of the meter's process groups over the timed window."""
    if warm_up:
        warm_up_started = datetime.now(timezone.utc)
        submit(bodies[:warm_up])
        wait_done(engine, done_sql, {"task": task, "since": warm_up_started}, min(warm_up, len(bodies)))
    cpu_before = meter.snapshot()
    started = submit(bodies)
    since = datetime.fromtimestamp(started, timezone.utc)
    rate = len(bodies) / (wait_done(engine, done_sql, {"task": task, "since": since}, len(bodies)) - started)
    return rate, {group: 1000 * seconds / len(bodies) for group, seconds in meter.used_since(cpu_before).items()}


def lensq_rate(stack: Stack, token: str, images: list[bytes], task: str, warm_up: int) -> tuple[float, dict]:
    return timed_rate(create_engine(stack.database_url), submitter(stack.api_url, "/v1/jobs", token),
                      encoded_bodies(task, images), task, LENSQ_DONE, warm_up, service_meter(stack.processes))


def lensq_batch_rate(stack: Stack, token: str, images: list[bytes], task: str) -> float:
    """The same jobs sent as LensQ users send many jobs: through POST /v1/batches, 250 per request."""
    def post_in_batches(bodies: list[dict]) -> None:
        for chunk in range(0, len(bodies), 250):
            client.post("/v1/batches", json={"items": bodies[chunk:chunk + 250]}).raise_for_status()

    engine = create_engine(stack.database_url)
    with api_client(stack.api_url, token) as client:
        started = time.time()
        post_in_batches([job_body(task, image, i) for i, image in enumerate(images)])
        since = datetime.fromtimestamp(started, timezone.utc)
        return len(images) / (wait_done(engine, LENSQ_DONE, {"task": task, "since": since}, len(images)) - started)


def naive_rate(stack: Stack, images: list[bytes], task: str, warm_up: int) -> tuple[float, dict]:
    bodies = encoded_bodies(task, images, shape=lambda body: body | {"image": body["image"].split(",")[1]})
    return timed_rate(create_engine(stack.database_url), submitter(stack.api_url, "/jobs", ""), bodies, task,
                      NAIVE_DONE, warm_up, service_meter(stack.processes))


def start_naive(model: str) -> Stack:
    stack = Stack.create(migrate=False)
    stack.env.update(NAIVE_DATABASE_URL=stack.database_url, NAIVE_BROKER_URL=stack.env["LENSQ_BROKER_URL"],
                     NAIVE_MODEL=model)
    stack.start_api("benchmarks.naive_service:api")
    stack.start_workers(1, env=WORKER_THREADS, command=[
                        sys.executable, "-m", "celery", "-A", "benchmarks.naive_service:celery_app",
                                    "worker", "-P", "solo", "-n", "naive@%h", "-l", "INFO", "--without-gossip",
                                    "--without-mingle", "--without-heartbeat"])
    return stack


def versus_naive(model: str, images: list[bytes], tasks: tuple[str, ...], latency_jobs: int, runs: int,
                 warm_up: int = WARM_UP_JOBS) -> tuple[dict, dict]:
    """Jobs/s of LensQ (one worker) and of the naive service (one worker) on the same jobs, interleaved: each run
    times LensQ (single submissions, then batches) and then the naive service on every task, so both see the
    same load from the rest of the machine; and, before those, LensQ's latency at light load on the same stack."""
    figures: dict = {task: {"lensq_runs": [], "lensq_batches_runs": [], "naive_runs": [], "lensq_cpu_runs": [],
                            "naive_cpu_runs": []} for task in tasks}
    stack = Stack.create({"LENSQ_MODEL": model})
    naive = None
    try:
        stack.start_api()
        stack.start_workers(1, env=WORKER_THREADS)
        token = new_tenant_token(stack.database_url)
        naive = start_naive(model)
        # Light load first, on the idle stack: an earlier run measured every part of a job's path about a third
        # slower right after 20,000 throughput jobs than after 4,000 (Postgres's aftermath of the burst, likely).
        latency = overhead(stack, token, model, latency_jobs)
        for run in range(runs):
            warm = warm_up if run == 0 else 0
            for task in tasks:
                runs_of = figures[task]
                record_run(runs_of, "lensq", lensq_rate(stack, token, images, task, warm))
                runs_of["lensq_batches_runs"].append(lensq_batch_rate(stack, token, images, task))
                record_run(runs_of, "naive", naive_rate(naive, images, task, warm))
                print(f"run {run + 1}/{runs} {task}: LensQ {runs_of['lensq_runs'][-1]:.1f} jobs/s, via batches "
                      f"{runs_of['lensq_batches_runs'][-1]:.1f}, naive {runs_of['naive_runs'][-1]:.1f}", flush=True)
    finally:
        stack.stop()
        if naive is not None:
            naive.stop()
    for task in tasks:
        f = figures[task]
        f["lensq"], f["lensq_batches"], f["naive"] = (median(f[key]) for key in ("lensq_runs", "lensq_batches_runs",
                                                                                  "naive_runs"))
        # Each run's ratio is measured side by side; the figure is their median.
        f["ratio"] = median([a / b for a, b in zip(f["lensq_runs"], f["naive_runs"])])
        f["ratio_batches"] = median([a / b for a, b in zip(f["lensq_batches_runs"], f["naive_runs"])])
        for service in ("lensq", "naive"):
            f[f"{service}_cpu_ms_per_job"] = {group: median([run[group] for run in f[f"{service}_cpu_runs"]])
                                              for group in f[f"{service}_cpu_runs"][0]}
    return figures, latency


def record_run(runs_of: dict, service: str, measured: tuple[float, dict]) -> None:
    rate, cpu = measured
    runs_of[f"{service}_runs"].append(rate)
    runs_of[f"{service}_cpu_runs"].append(cpu)


def model_seconds(model: str, image: bytes, runs: int) -> float:
    """The model's own time for one caption of `image` at batch 1, decode included, in this process."""
    import torch

    from multimodal import load_pipeline

    torch.set_num_threads(int(WORKER_THREADS["OMP_NUM_THREADS"]))  # as the worker runs it
    pipeline = load_pipeline(model, device="cpu")
    pipeline.caption([pipeline.prepare(image)])
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        pipeline.caption([pipeline.prepare(image)])
        times.append(time.perf_counter() - started)
    return median(times)


def light_load_latency(stack: Stack, token: str, images: list[bytes]) -> list[dict[str, float]]:
    """Submit one caption job, wait for it, repeat. Per job, in seconds: submit to finished, the POST's round trip,
    the job's wait from its insert to its claim (commit, doorbell, fill wait, claim) and its run (claim to written)."""
    engine = create_engine(stack.database_url)
    samples = []
    with api_client(stack.api_url, token) as client:
        for index, image in enumerate(images):
            started = time.time()
            job_id = client.post("/v1/jobs", json=job_body("caption", image, index)).json()["id"]
            answered = time.time()
            while True:
                with engine.connect() as connection:
                    row = connection.execute(text("SELECT created_at, started_at, finished_at FROM jobs "
                                                  "WHERE id = :id"), {"id": job_id}).one()
                if row.finished_at is not None:
                    break
                time.sleep(0.002)
            samples.append({"latency": row.finished_at.timestamp() - started, "post": answered - started,
                            "queued": (row.started_at - row.created_at).total_seconds(),
                            "run": (row.finished_at - row.started_at).total_seconds()})
    return samples


def overhead(stack: Stack, token: str, model: str, count: int) -> dict:
    """Light-load latency on a running stack, and the model's own time for the same image in this process."""
    image = png_bytes(easy_vqa_items(1)[0][0])
    light_load_latency(stack, token, [image] * min(3, count))  # warm-up
    samples = light_load_latency(stack, token, [image] * count)
    latencies = [sample["latency"] for sample in samples]
    model_time = model_seconds(model, image, max(5, count // 4))
    over = [latency - model_time for latency in latencies]
    return {"jobs": count, "model_seconds": model_time, "latency_p50": percentile(latencies, 50),
            "latency_p99": percentile(latencies, 99), "overhead_p50": percentile(over, 50),
            "overhead_p99": percentile(over, 99),
            **{f"{part}_p50": percentile([s[part] for s in samples], 50) for part in ("post", "queued", "run")}}


def scale_out(model: str, images: list[bytes]) -> dict:
    """Caption jobs/s with 1 and with 2 workers (torch on 1 thread each), the jobs sent through the batch endpoint."""
    figures = {}
    for workers in (1, 2):
        stack = Stack.create({"LENSQ_MODEL": model})
        try:
            stack.start_api()
            stack.start_workers(workers, env=WORKER_THREADS)
            token = new_tenant_token(stack.database_url)
            engine = create_engine(stack.database_url)
            with api_client(stack.api_url, token) as client:
                started = time.time()
                for chunk in range(0, len(images), 250):
                    items = [job_body("caption", image, i) for i, image in enumerate(images[chunk:chunk + 250])]
                    client.post("/v1/batches", json={"items": items}).raise_for_status()
            since = datetime.fromtimestamp(started, timezone.utc)
            done = wait_done(engine, LENSQ_DONE, {"task": "caption", "since": since}, len(images))
            figures[workers] = len(images) / (done - started)
            print(f"scale-out: {workers} worker(s): {figures[workers]:.1f} jobs/s", flush=True)
        finally:
            stack.stop()
    return figures


def stage_costs(model: str, images: list[bytes], tasks: tuple[str, ...] = ("caption",)) -> dict:
    """Per-job CPU cost of each stage both services run, on one thread in this process (ms per job, median of 5);
    the model's at batch 1 and at batch len(images) for each task."""
    import io

    import open_clip
    import torch
    from PIL import Image

    from multimodal import load_pipeline
    from services.config import ServiceSettings
    from services.input_checks import check_image

    torch.set_num_threads(int(WORKER_THREADS["OMP_NUM_THREADS"]))
    pipeline = load_pipeline(model, device="cpu")
    vision = pipeline.model.cfg.vision
    transform = open_clip.image_transform(pipeline.image_size, is_train=False, mean=vision.mean, std=vision.std)
    settings = ServiceSettings()
    stored = [check_image(data, settings).data for data in images]
    prepared = [pipeline.prepare(data) for data in stored]

    def per_job(work, count: int = len(images)) -> float:
        work()  # warm-up
        return 1000 * median([timed(work) for _ in range(5)]) / count

    def model_call(task: str, chosen: list, first: int = 0) -> None:
        """One call on `chosen`, the images from index `first` on, with the questions their jobs carry."""
        if task == "vqa":
            pipeline.answer(chosen, [question_of(first + i) for i in range(len(chosen))])
        else:
            pipeline.caption(chosen)

    one = prepared[:4]
    return {
        "api_stored_copy": per_job(lambda: [check_image(d, settings) for d in images]),
        "lensq_worker_decode": per_job(lambda: [pipeline.prepare(d) for d in stored]),
        "naive_decode": per_job(lambda: [transform(Image.open(io.BytesIO(d)).convert("RGB")) for d in images]),
        "model": {task: {"batch_1": per_job(lambda: [model_call(task, [image], i) for i, image in enumerate(one)],
                                             len(one)),
                         "batch_n": per_job(lambda: model_call(task, prepared))} for task in tasks},
        "batch": len(images),
    }


CPU_GROUPS = (("api", "API"), ("worker", "worker"), ("postgres", "Postgres"), ("redis", "Redis"),
              ("client", "client"))


def cpu_table(versus: dict) -> str:
    """Where each service's CPU went during its timed single-submission runs, per job, beside its wall time."""
    rows = []
    for task, f in versus.items():
        for service, name in (("naive", "naive"), ("lensq", "LensQ")):
            cpu = f[f"{service}_cpu_ms_per_job"]
            rows.append([task, name, *(f"{cpu[group]:.1f}" for group, _ in CPU_GROUPS),
                         f"**{sum(cpu.values()):.1f}**", f"{1000 / f[service]:.1f}"])
    return (f"CPU time per job during those runs (ms, median of the runs; from /proc: the API and worker processes, "
            f"all of Postgres's and Redis's processes, and the benchmark's own process, which is the client). Each "
            f"service's processes share this machine's {CORES} cores, so a service's wall time per job is at least "
            f"its total CPU / {CORES}; the worker's share includes the model (under a backlog LensQ's worker runs the "
            f"next batch's vision tower on its claim-ahead thread, beside the current batch's LM).\n\n"
            + table(["task", "service", *(label for _, label in CPU_GROUPS), "total", "wall ms per job"], rows))


TARGET_RATIO = 5.0


def ratio_bounds(versus: dict, costs: dict, cores: int) -> dict:
    """Per task, what this run's figures allow LensQ's ratio to the naive service to be on `cores` cores.

    Every process of both stacks shares the cores, so LensQ's wall time per job is at least its total CPU per job
    (API, worker, Postgres, Redis and the client) / cores: `full_use` is the ratio if LensQ kept every core busy,
    and `cpu_for_target` the total CPU per job the target needs even then. `without_model` is the ratio if the
    model cost nothing in either service and the rest stayed as measured: the naive service's wall time less its
    model at batch 1 against LensQ's CPU less its model at batch 32 (one thread, in this process; stage_costs)."""
    bounds = {}
    for task, f in versus.items():
        naive_wall, lensq_cpu = 1000 / f["naive"], sum(f["lensq_cpu_ms_per_job"].values())
        bound = {"naive_wall_ms": naive_wall, "lensq_cpu_ms": lensq_cpu, "full_use": cores * naive_wall / lensq_cpu,
                 "cpu_for_target": cores * naive_wall / TARGET_RATIO,
                 "naive_cores_busy": sum(f["naive_cpu_ms_per_job"].values()) / naive_wall}
        model = costs.get("model", {}).get(task)
        if model and lensq_cpu > model["batch_n"]:
            bound["without_model"] = cores * (naive_wall - model["batch_1"]) / (lensq_cpu - model["batch_n"])
        bounds[task] = bound
    return bounds


def bounds_text(bounds: dict, cores: int) -> str:
    def task_text(task: str, b: dict) -> str:
        text = (f"{task}: the naive service takes {b['naive_wall_ms']:.1f} ms of wall time per job with "
                f"{b['naive_cores_busy']:.2f} cores busy, so "
                f"{TARGET_RATIO:g}x needs LensQ at ≤ {b['cpu_for_target']:.1f} ms of CPU per job; it measured "
                f"{b['lensq_cpu_ms']:.1f}, which allows at most **{b['full_use']:.1f}x**")
        if "without_model" in b:
            text += f", and with a model that cost nothing in either service, **{b['without_model']:.1f}x**"
        return text

    return (f"**What the target takes on this machine** (from this section's figures: all of both stacks share its {cores} "
            f"cores, so LensQ's wall time per job is at least its total CPU per job / {cores}). "
            + "; ".join(task_text(task, b) for task, b in bounds.items())
            + ". Where the second figure is below the first, a cheaper model would lower the ratio: the naive "
              "service's per-job overhead (its request, Celery task, row write and full-size decode) is then all "
              "that is left to beat, and LensQ's own per-job CPU (its request, checks, stored copy, decode, claim "
              "and write shares) must come down instead.")


def render(args, versus: dict, latency: dict, scaled: dict, costs: dict, bounds: dict) -> str:
    rows = [[task, f"{f['naive']:.1f}", f"{f['lensq']:.1f}", f"**{f['ratio']:.1f}x**", f"{f['lensq_batches']:.1f}",
             f"**{f['ratio_batches']:.1f}x**",
             ", ".join(f"{a / b:.1f}" for a, b in zip(f["lensq_runs"], f["naive_runs"]))]
            for task, f in versus.items()]
    parts = [
        f"**1. Against the naive service** (benchmarks/naive_service.py: its own API, one Celery task per job, the "
        f"model on one image at a time after open_clip's default preprocessing of the full-size image, its own "
        f"Postgres row). Same model ({args.model}), same {args.jobs} jobs per task (distinct {args.side}x"
        f"{args.side * 3 // 4} JPEG photos), one worker each (torch on 1 thread), each job submitted in its own "
        f"request over {CLIENT_CONCURRENCY} keep-alive connections by benchmarks/light_client.py, its body encoded "
        f"before the clock starts (httpx costs as much CPU per request as an API, on the cores the services share), "
        f"and, for LensQ, once more through the batch endpoint (httpx, 250 jobs per request), timed from the first request to the last result row in Postgres, after "
        f"{WARM_UP_JOBS} warm-up jobs. Both stacks stay up and take turns, {args.runs} runs: medians, and the ratio "
        f"is the median of each run's ratio. Target: LensQ ≥ 5x.\n\n"
        + table(["task", "naive jobs/s", "LensQ jobs/s", "LensQ / naive", "LensQ via /v1/batches, jobs/s",
                 "batches / naive", "each run's LensQ / naive"], rows),
        cpu_table(versus),
        f"**4a. Service overhead at light load.** {latency['jobs']} caption jobs one at a time (a 64x64 PNG), on "
        f"the stack just started, before the throughput runs, "
        f"submit to `finished_at` in the ledger, minus the model's own time for that image at batch 1 "
        f"({latency['model_seconds'] * 1000:.1f} ms, decode included, median). Latency p50 "
        f"{latency['latency_p50'] * 1000:.1f} ms, p99 {latency['latency_p99'] * 1000:.1f} ms; **overhead p50 "
        f"{latency['overhead_p50'] * 1000:.1f} ms, p99 {latency['overhead_p99'] * 1000:.1f} ms** (target p50 ≤ 30 ms; "
        f"with {latency['jobs']} samples p99 is close to the maximum). Medians of the parts: the POST's round trip "
        f"{latency['post_p50'] * 1000:.1f} ms (checks, the stored copy, the insert and commit, the doorbell); "
        f"insert to claim {latency['queued_p50'] * 1000:.1f} ms (commit, Redis, Celery's delivery, one fill-wait "
        f"poll, the claim); claim to written {latency['run_p50'] * 1000:.1f} ms (decode, the model, the result's "
        f"transaction). The first two overlap: the job's insert happens inside the POST.",
    ]
    if costs:
        parts.append(
            f"Where a job's CPU time goes (one thread, ms per job, median of 5, same photos): LensQ's API checks the "
            f"upload and makes its stored copy (check_image: these plain JPEGs keep their own segments, read to "
            f"their end, not decoded) "
            f"**{costs['api_stored_copy']:.1f}**; its worker decodes that copy at a reduced DCT scale and fits it to "
            f"the model's input **{costs['lensq_worker_decode']:.1f}** (on the preprocessing threads, while the "
            f"model runs the previous batch); the naive worker's full decode + open_clip transform "
            f"**{costs['naive_decode']:.1f}**; the model at batch 1 and at batch {costs['batch']}: "
            + "; ".join(f"{task} **{m['batch_1']:.1f}** and **{m['batch_n']:.1f}**" for task, m in costs["model"].items())
            + ". With both models on one thread, the model alone allows LensQ "
            + ", ".join(f"{m['batch_1'] / m['batch_n']:.1f}x on {task}" for task, m in costs["model"].items())
            + " the naive service's rate; the rest of the ratio comes from each service's overhead per job (the naive "
            "service pays a Celery task, a row write and a full-size decode per job, LensQ one claim and one write per "
            "batch).")
    parts.append(bounds_text(bounds, CORES))
    if scaled:
        ratio = scaled[2] / scaled[1]
        parts.append(
            f"**7. Scale-out.** {args.scale_jobs} caption jobs sent through the batch endpoint (250 per request), "
            f"torch on 1 thread per worker: 1 worker **{scaled[1]:.1f} jobs/s**, 2 workers **{scaled[2]:.1f} jobs/s** "
            f"({ratio:.2f}x). Both workers share this machine's 2 cores with the API, Postgres, Redis and the "
            f"client, so the second worker can add at most the one core the first leaves idle. With N GPU workers the "
            f"service's ceiling is min(N x one worker's jobs/s, the API's intake (section 4), Postgres's claim and "
            f"write rate): see the arithmetic below.")
    return "\n\n".join(parts)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="lensq-tiny")
    parser.add_argument("--jobs", type=int, default=1000, help="jobs per task and service")
    parser.add_argument("--runs", type=int, default=5, help="runs of each service on each task, interleaved")
    parser.add_argument("--side", type=int, default=640, help="width of the job photos (height 3/4 of it)")
    parser.add_argument("--tasks", default="caption,vqa")
    parser.add_argument("--latency-jobs", type=int, default=50)
    parser.add_argument("--scale-jobs", type=int, default=1000)
    parser.add_argument("--json")
    parser.add_argument("--smoke", action="store_true", help="4 jobs, caption only, no scale-out")
    args = parser.parse_args(argv)
    if args.smoke:
        args.jobs, args.tasks, args.latency_jobs, args.scale_jobs, args.side, args.runs = 4, "caption", 2, 0, 320, 1
    versus, latency = versus_naive(args.model, job_photos(args.jobs, args.side), tuple(args.tasks.split(",")),
                                   args.latency_jobs, args.runs, warm_up=0 if args.smoke else WARM_UP_JOBS)
    scaled = scale_out(args.model, job_photos(args.scale_jobs, args.side)) if args.scale_jobs else {}
    costs = stage_costs(args.model, job_photos(4 if args.smoke else 32, args.side), tuple(args.tasks.split(",")))
    bounds = ratio_bounds(versus, costs, CORES)
    figures = {"versus_naive": versus, "latency": latency, "scale_out": scaled, "jobs": args.jobs, "side": args.side,
               "stage_ms_per_job": costs, "ratio_bounds": bounds}
    write_section(args.json, "1, 4a, 7. End to end: against the naive service, overhead, scale-out",
                  render(args, versus, latency, scaled, costs, bounds), figures)
    return figures


if __name__ == "__main__":
    main()
