"""Benchmark 8 (needs CUDA): both checkpoints in bf16 on the GPU, items/s per task for batch 1 to 256.

Runs in well under 10 minutes on one H200: each (checkpoint, task, batch) point is timed over a fixed number of
calls after a warm-up, with CUDA synchronised around each timing. On a machine without CUDA it says so and exits 0.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

BATCHES = (1, 2, 4, 8, 16, 32, 64, 128, 256)
TASKS = ("caption", "vqa", "sentiment", "classify")
LABELS = ["circle", "rectangle", "triangle"]


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


def items_per_second(pipeline, task: str, data, batch: int, calls: int, device: str) -> float:
    images, questions = [image for image, _ in data[:batch]], [question for _, question in data[:batch]]
    call(pipeline, task, images, questions)  # warm-up
    synchronize(device)
    started = time.perf_counter()
    for _ in range(calls):
        call(pipeline, task, images, questions)
    synchronize(device)
    return batch * calls / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--checkpoints", default="lensq-tiny,lensq-smol")
    parser.add_argument("--max-batch", type=int, default=256)
    parser.add_argument("--calls", type=int, default=3, help="timed calls per point, timed together")
    parser.add_argument("--device", default="cuda", help="cpu only to check the script itself (float32)")
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_throughput: no CUDA device here; nothing measured")
        return {}
    from multimodal import load_pipeline

    data = items(args.max_batch)
    figures: dict = {"device": torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu",
                     "dtype": "bfloat16" if args.device == "cuda" else "float32"}
    for name in args.checkpoints.split(","):
        pipeline = load_pipeline(name, device=args.device)
        for task in TASKS:
            for batch in (b for b in BATCHES if b <= args.max_batch):
                rate = items_per_second(pipeline, task, data, batch, args.calls, args.device)
                figures.setdefault(name, {}).setdefault(task, {})[batch] = rate
                print(f"{name} {task} batch {batch}: {rate:.1f} items/s", flush=True)
        del pipeline
        if args.device == "cuda":
            torch.cuda.empty_cache()
    if args.json:
        with open(args.json, "w") as out:
            json.dump(figures, out, indent=2)
    return figures


if __name__ == "__main__":
    sys.exit(0 if main() is not None else 1)
