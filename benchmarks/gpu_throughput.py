"""Benchmark 8 (needs CUDA): both checkpoints in bf16 on the GPU, items/s per task for batch 1 to 256.

Each (checkpoint, task, batch) point is one warm-up call, then `--calls` calls timed one by one with CUDA
synchronised around each; the figure is the median call's items/s, with the slowest and fastest beside it. A call
is the whole pipeline method: preprocessing on the CPU, the vision tower, generation or the heads, decoding.
Runs in a few minutes on one H200. On a machine without CUDA it says so and exits 0.

The figures go to `--json`; committed as benchmarks/gpu_results.json, `make bench` renders them into RESULTS.md
(a CPU-only machine cannot measure them itself).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from benchmarks.figures import commit, median

BATCHES = (1, 2, 4, 8, 16, 32, 64, 128, 256)
TASKS = ("caption", "vqa", "sentiment", "classify")
LABELS = ["circle", "rectangle", "triangle"]
# The committed figures from the last run on a GPU (`--json benchmarks/gpu_results.json`), which make bench renders.
RESULTS_FILE = Path(__file__).parent / "gpu_results.json"


def items(count: int):
    from easy_vqa import get_test_image_paths, get_test_questions
    from PIL import Image

    questions, _answers, image_ids = get_test_questions()
    paths = get_test_image_paths()
    return [(Image.open(paths[image_ids[i]]).convert("RGB"), questions[i]) for i in range(count)]


def call(pipeline, task: str, images, questions):
    if task == "caption":
        return pipeline.caption(images)
    if task == "vqa":
        return pipeline.answer(images, questions)
    if task == "sentiment":
        return pipeline.sentiment(images, ["what a lovely day"] * len(images))
    return pipeline.classify(images, [LABELS] * len(images))


def synchronize(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()  # kernels run asynchronously: time only work that has finished


def measure_point(pipeline, task: str, data, batch: int, calls: int, device: str) -> dict:
    """Items/s of one (task, batch) point: the median of `calls` separately timed calls, and their range."""
    images, questions = [image for image, _ in data[:batch]], [question for _, question in data[:batch]]
    call(pipeline, task, images, questions)  # warm-up: kernel selection, allocator growth
    rates = []
    for _ in range(calls):
        synchronize(device)
        started = time.perf_counter()
        call(pipeline, task, images, questions)
        synchronize(device)
        rates.append(batch / (time.perf_counter() - started))
    return {"items_per_s": median(rates), "slowest": min(rates), "fastest": max(rates)}


def environment(device: str) -> dict:
    import torch

    info = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            # The GPU machine receives a copy of the tree without git: the caller may name the commit.
            "commit": os.environ.get("LENSQ_COMMIT") or commit(),
            "torch": torch.__version__, "python": platform.python_version(), "cpu_cores": os.cpu_count()}
    if device == "cuda":
        info["device"] = torch.cuda.get_device_name(0)
        info["dtype"] = "bfloat16"
    else:
        info["device"], info["dtype"] = "cpu", "float32"
    return info


def measure_checkpoint(name: str, data, batches: list[int], calls: int, device: str) -> dict:
    import torch

    from multimodal import load_pipeline

    started = time.perf_counter()
    pipeline = load_pipeline(name, device=device)
    result: dict = {"load_seconds": time.perf_counter() - started, "tasks": {}}
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for task in TASKS:
        for batch in batches:
            point = measure_point(pipeline, task, data, batch, calls, device)
            result["tasks"].setdefault(task, {})[str(batch)] = point
            print(f"{name} {task} batch {batch}: {point['items_per_s']:.1f} items/s "
                  f"({point['slowest']:.1f}-{point['fastest']:.1f})", flush=True)
    if device == "cuda":
        result["peak_memory_mib"] = torch.cuda.max_memory_allocated() / 2**20
    del pipeline
    if device == "cuda":
        torch.cuda.empty_cache()
    return result


def committed_results() -> dict | None:
    """The figures of RESULTS_FILE, or None before any run on a GPU was committed."""
    return json.loads(RESULTS_FILE.read_text()) if RESULTS_FILE.exists() else None


def best_point(tasks: dict, task: str) -> tuple[str, float]:
    """(batch, items/s) of a task's fastest batch."""
    batch, point = max(tasks[task].items(), key=lambda kv: kv[1]["items_per_s"])
    return batch, point["items_per_s"]


def markdown(figures: dict) -> str:
    """A RESULTS.md section from this script's JSON: items/s per batch, each checkpoint's best batch and memory."""
    env = figures["environment"]
    lines = [f"Measured on one {env['device']} in {env['dtype']} on {env['date']}, commit {env['commit']}, torch "
             f"{env['torch']}, by `python -m benchmarks.gpu_throughput --json benchmarks/gpu_results.json`; this "
             f"section renders that committed file (make bench does not re-measure it without a GPU). Items/s per "
             f"call of the pipeline method (CPU preprocessing included), median of {figures['calls_per_point']} "
             "separately timed calls after a warm-up; easy-VQA test images (64 px). A load time includes converting "
             "the LM once where it ships as GGUF (lensq-smol). Small batches are bound by kernel launches and Python "
             "per generated token, not by the GPU's arithmetic: a GPU worker wants large batches (LENSQ_BATCH_SIZE)."
             + (f" Note: {env['note']}." if env.get("note") else ""), ""]
    for name, result in figures["checkpoints"].items():
        tasks = result["tasks"]
        batches = list(next(iter(tasks.values())))
        lines += [f"**{name}** (loaded in {result['load_seconds']:.1f} s; peak GPU memory "
                  f"{result.get('peak_memory_mib', 0):.0f} MiB):", "",
                  "| task | " + " | ".join(f"batch {b}" for b in batches) + " | best / batch 1 |",
                  "|---" * (len(batches) + 2) + "|"]
        for task, points in tasks.items():
            best_batch, best = best_point(tasks, task)
            lines.append(f"| {task} | " + " | ".join(f"{points[b]['items_per_s']:.0f}" for b in batches)
                         + f" | **{best / points[batches[0]]['items_per_s']:.0f}x** (batch {best_batch}) |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--checkpoints", default="lensq-tiny,lensq-smol")
    parser.add_argument("--max-batch", type=int, default=256)
    parser.add_argument("--calls", type=int, default=5, help="separately timed calls per point (the median counts)")
    parser.add_argument("--device", default="cuda", help="cpu only to check the script itself (float32)")
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_throughput: no CUDA device here; nothing measured")
        return {}
    data = items(args.max_batch)
    batches = [b for b in BATCHES if b <= args.max_batch]
    figures: dict = {"environment": environment(args.device), "calls_per_point": args.calls, "checkpoints": {}}
    for name in args.checkpoints.split(","):
        figures["checkpoints"][name] = measure_checkpoint(name, data, batches, args.calls, args.device)
        if args.json:  # written after each checkpoint, so a run cut short keeps what it measured
            with open(args.json, "w") as out:
                json.dump(figures, out, indent=2)
    return figures


if __name__ == "__main__":
    sys.exit(0 if main() is not None else 1)
