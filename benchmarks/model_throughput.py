"""Benchmarks 2 and 3: model throughput at batch 1 vs 32 per task and checkpoint; the vision tower vs peak FLOP/s."""
from __future__ import annotations

import argparse

import torch

from benchmarks.figures import median, repeat, table, timed, write_section
from benchmarks.images import easy_vqa_items

LABELS = ["circle", "rectangle", "triangle"]
TASKS = ("caption", "vqa", "sentiment", "classify")


def call(pipeline, task: str, images, questions):
    if task == "caption":
        return pipeline.caption(images)
    if task == "vqa":
        return pipeline.answer(images, questions)
    if task == "sentiment":
        return pipeline.sentiment(images, ["what a lovely day" for _ in images])
    return pipeline.classify(images, [LABELS for _ in images])


def items_per_second(pipeline, task: str, items, batch: int, runs: int) -> float:
    """Median over `runs` of len(items) / the time to run them in batches of `batch` (inputs preprocessed)."""
    images, questions = [image for image, _ in items], [question for _, question in items]

    def run_all() -> None:
        for start in range(0, len(items), batch):
            call(pipeline, task, images[start:start + batch], questions[start:start + batch])

    run_all()  # warm-up: first calls allocate
    return len(items) / median(repeat(lambda: timed(run_all), runs))


def batching_rows(name: str, items, runs: int, b1_items: int, big_batch: int) -> tuple[list, dict]:
    from multimodal import load_pipeline

    pipeline = load_pipeline(name, device="cpu")
    rows, figures = [], {}
    for task in TASKS:
        one = items_per_second(pipeline, task, items[:b1_items], 1, runs)
        many = items_per_second(pipeline, task, items[:big_batch], big_batch, runs)
        figures[task] = {"batch_1": one, f"batch_{big_batch}": many, "ratio": many / one}
        rows.append([name, task, f"{one:.1f}", f"{many:.1f}", f"**{many / one:.1f}x**"])
    return rows, figures


def peak_matmul_flops(runs: int, n: int = 2048) -> float:
    """This CPU's float32 matmul rate (FLOP/s) through torch, all its threads, median of `runs`."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    return 2 * n**3 / median(repeat(lambda: timed(lambda: torch.mm(a, b)), runs))


def vision_tower_flops(pipeline, batch: int) -> int:
    """FLOPs of one vision-tower forward at `batch` (torch's FLOP counter: matmuls and convolutions).

    Counted with nn.MultiheadAttention's fused inference path off: the counter has no formula for that one fused
    op (aten._native_multi_head_attention) and counted its projections as nothing, about half the tower. Off, the
    same arithmetic runs as linear and batched-matmul ops the counter knows; the attention scores themselves
    (softmax(QK^T)V, about a tenth of the tower) stay uncounted, so the figure errs low."""
    from torch.utils.flop_counter import FlopCounterMode

    pixels = torch.randn(batch, 3, pipeline.image_size, pipeline.image_size)
    fused = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with FlopCounterMode(display=False) as counter, torch.inference_mode():
            pipeline.model.vision(pixels)
    finally:
        torch.backends.mha.set_fastpath_enabled(fused)
    return counter.get_total_flops()


def vision_tower_rows(runs: int, batches: tuple[int, ...], peak: float) -> tuple[list, dict]:
    from multimodal import load_pipeline

    pipeline = load_pipeline("lensq-tiny", device="cpu")
    rows, figures = [], {}
    for batch in batches:
        pixels = torch.randn(batch, 3, pipeline.image_size, pipeline.image_size)
        with torch.inference_mode():
            pipeline.model.vision(pixels)
            seconds = median(repeat(lambda: timed(lambda: pipeline.model.vision(pixels)), runs))
        rate = vision_tower_flops(pipeline, batch) / seconds
        figures[batch] = {"flops_per_second": rate, "fraction_of_peak": rate / peak,
                          "images_per_second": batch / seconds}
        rows.append([batch, f"{batch / seconds:.0f}", f"{rate / 1e9:.1f}", f"{100 * rate / peak:.0f}%"])
    return rows, figures


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--checkpoints", default="lensq-tiny,lensq-smol")
    parser.add_argument("--smol-batch-1-items", type=int, default=4, help="items timed one by one on lensq-smol")
    parser.add_argument("--json")
    parser.add_argument("--smoke", action="store_true", help="lensq-tiny only, batch 4, 1 run")
    args = parser.parse_args(argv)
    runs, big_batch = (1, 4) if args.smoke else (args.runs, 32)
    names = ["lensq-tiny"] if args.smoke else args.checkpoints.split(",")
    items = easy_vqa_items(big_batch)
    rows, figures = [], {"threads": torch.get_num_threads(), "runs": runs}
    for name in names:
        b1_items = args.smol_batch_1_items if name == "lensq-smol" and not args.smoke else big_batch
        more_rows, figures[name] = batching_rows(name, items, runs, b1_items, big_batch)
        rows += more_rows
    peak = peak_matmul_flops(runs, 512 if args.smoke else 2048)
    vision_rows, figures["vision_tower"] = vision_tower_rows(runs, (4,) if args.smoke else (1, 8, 32, 128, 256), peak)
    best = max(figures["vision_tower"].values(), key=lambda f: f["flops_per_second"])
    figures["peak_flops_per_second"], figures["best_fraction_of_peak"] = peak, best["fraction_of_peak"]
    markdown = (
        f"easy-VQA test images (64x64), inputs already decoded, {torch.get_num_threads()} torch threads, CPU float32, "
        f"median of {runs} runs after one warm-up. Batch 1 runs {big_batch} items one call each (lensq-smol: "
        f"{args.smol_batch_1_items} items, its captions take about a second each); batch {big_batch} runs them in one "
        f"call. Target: ≥ 4x for caption on lensq-tiny.\n\n"
        + table(["checkpoint", "task", "items/s at batch 1", f"items/s at batch {big_batch}", "ratio"], rows)
        + f"\n\n**3. Physical limit.** This CPU's float32 matmul peak through torch "
        f"({512 if args.smoke else 2048}² "
        f"mm, same threads): **{peak / 1e9:.1f} GFLOP/s**. lensq-tiny's vision tower (ViT, 64 px, patch 8, width 128, "
        f"4 layers; FLOPs counted by torch.utils.flop_counter on the same forward with nn.MultiheadAttention's fused "
        f"path off, since the counter cannot see into that fused op; the attention scores stay uncounted, so the "
        f"figures err low; times are of the fused path, as the workers run it) at each batch size:\n\n"
        + table(["batch", "images/s", "GFLOP/s achieved", "of peak"], vision_rows)
        + f"\n\nBest: **{100 * best['fraction_of_peak']:.0f}% of peak** (target ≥ 30%)."
    )
    write_section(args.json, "2-3. Model throughput: batching, and the CPU's limit", markdown, figures)
    return figures


if __name__ == "__main__":
    main()
