"""Each benchmark script runs end to end on a tiny input and writes its RESULTS.md section (no timing is judged)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import api_intake, end_to_end, model_throughput, preprocess_draft, run_all, worker_memory


def section(path) -> dict:
    data = json.loads(path.read_text())
    assert data["title"] and data["markdown"] and data["machine"]["cores"] >= 1
    return data["figures"]


def test_preprocess_draft_measures_both_paths(tmp_path):
    figures = section_of(preprocess_draft, tmp_path)
    for size in ("64", "336"):
        assert figures[size]["draft"] > 0 and figures[size]["full"] > 0 and figures[size]["ratio_full"] > 0


def test_model_throughput_measures_batching_and_the_peak(tmp_path):
    figures = section_of(model_throughput, tmp_path)
    assert set(figures["lensq-tiny"]) == {"caption", "vqa", "sentiment", "classify"}
    assert all(f["batch_1"] > 0 and f["ratio"] > 0 for f in figures["lensq-tiny"].values())
    assert figures["peak_flops_per_second"] > 0 and 0 < figures["best_fraction_of_peak"]


def test_the_vision_towers_flops_are_all_its_matmuls_and_its_patch_convolution():
    """The fraction of peak is only as true as the FLOP count: every projection of every layer counts, the fused
    attention path's included (the counter once saw none of those, about half the tower)."""
    from multimodal import load_pipeline

    pipeline = load_pipeline("lensq-tiny", device="cpu")
    visual = pipeline.model.vision.visual
    width, layers = visual.transformer.width, len(visual.transformer.resblocks)
    mlp = visual.transformer.resblocks[0].mlp.c_fc.out_features
    patch = visual.conv1.kernel_size[0]
    patches = (pipeline.image_size // patch) ** 2
    tokens = patches + 1  # and the class token
    per_image = 2 * (patches * 3 * patch * patch * width  # the patch convolution
                     + layers * tokens * (3 * width * width + width * width + 2 * width * mlp)  # qkv, out, mlp
                     + width * visual.proj.shape[1])  # the pooled token's projection
    assert model_throughput.vision_tower_flops(pipeline, 2) == 2 * per_image


@pytest.mark.timeout(120)
def test_api_intake_measures_singles_and_batches(tmp_path):
    figures = section_of(api_intake, tmp_path)
    assert figures["single_per_second"] > 0 and figures["batch_items_per_second"] > 0
    assert figures["keyed_single_per_second"] > 0


@pytest.mark.timeout(180)
def test_end_to_end_runs_lensq_and_the_naive_service(tmp_path):
    figures = section_of(end_to_end, tmp_path)
    caption = figures["versus_naive"]["caption"]
    assert caption["lensq"] > 0 and caption["naive"] > 0 and caption["lensq_batches"] > 0
    assert figures["latency"]["latency_p50"] > 0
    model = figures["stage_ms_per_job"]["model"]["caption"]
    assert model["batch_1"] > 0 and model["batch_n"] > 0
    bound = figures["ratio_bounds"]["caption"]
    assert bound["full_use"] > 0 and bound["cpu_for_target"] > 0


def test_ratio_bounds_follow_from_the_cpu_per_job_and_the_model_costs():
    """A naive service at 50 jobs/s (20 ms a job, 8 of them its model at batch 1) against LensQ at 10 ms of CPU a
    job (4 of them its model at batch 32), on 2 cores: at most 2 x 20 / 10 = 4x; 5x needs 2 x 20 / 5 = 8 ms; with
    a free model, 2 x (20 - 8) / (10 - 4) = 4x."""
    versus = {"vqa": {"naive": 50.0, "lensq_cpu_ms_per_job": {"api": 2.5, "worker": 6.0, "postgres": 1.0,
                                                              "redis": 0.1, "client": 0.4},
                      "naive_cpu_ms_per_job": {"api": 2.0, "worker": 18.0, "postgres": 1.0}}}
    costs = {"model": {"vqa": {"batch_1": 8.0, "batch_n": 4.0}}}
    bound = end_to_end.ratio_bounds(versus, costs, cores=2)["vqa"]
    assert bound["full_use"] == pytest.approx(4.0)
    assert bound["cpu_for_target"] == pytest.approx(8.0)
    assert bound["without_model"] == pytest.approx(4.0)
    assert bound["naive_cores_busy"] == pytest.approx(21.0 / 20.0)
    assert "without_model" not in end_to_end.ratio_bounds(versus, {}, cores=2)["vqa"]
    text = end_to_end.bounds_text(end_to_end.ratio_bounds(versus, costs, cores=2), 2)
    assert "≤ 8.0 ms" in text and "**4.0x**" in text and "with 1.05 cores busy" in text


@pytest.mark.timeout(120)
def test_worker_memory_reads_the_worker_rss(tmp_path):
    figures = section_of(worker_memory, tmp_path)
    tiny = figures["lensq-tiny"]
    assert tiny["loaded_mib"] > 100 and tiny["final_mib"] > 0  # torch alone is over 100 MiB


def test_results_page_names_the_machine_and_every_section(tmp_path):
    sections = {"preprocess_draft": {"title": "5. Preprocessing", "markdown": "figures", "figures": {}}}
    page = run_all.render(sections, run_all.datetime.now(run_all.timezone.utc), "busy machine")
    assert "cores" in page and "commit" in page and "5. Preprocessing" in page and "busy machine" in page
    assert "## 8. GPU" in page and "no GPU" in page


def section_of(module, tmp_path) -> dict:
    """Runs the script in a process of its own: a benchmark sets LENSQ_* variables and reads settings once per
    process, which must not leak into the rest of the test run."""
    out = tmp_path / "section.json"
    root = Path(__file__).resolve().parents[2]
    finished = subprocess.run([sys.executable, "-m", module.__name__, "--smoke", "--json", str(out)], cwd=root,
                              env={**os.environ, "PYTHONPATH": str(root)}, capture_output=True, text=True)
    assert finished.returncode == 0, finished.stdout[-2000:] + finished.stderr[-4000:]
    return section(out)


def test_gpu_script_runs_its_code_on_the_cpu(tmp_path):
    from benchmarks import gpu_throughput

    out = tmp_path / "gpu.json"
    figures = gpu_throughput.main(["--device", "cpu", "--checkpoints", "lensq-tiny", "--max-batch", "2", "--calls", "3",
                                   "--json", str(out)])
    assert figures["environment"]["dtype"] == "float32" and figures["calls_per_point"] == 3
    tiny = json.loads(out.read_text())["checkpoints"]["lensq-tiny"]
    assert set(tiny["tasks"]) == {"caption", "vqa", "sentiment", "classify"}
    for task in tiny["tasks"].values():
        assert set(task) == {"1", "2"}
        for point in task.values():
            assert 0 < point["slowest"] <= point["items_per_s"] <= point["fastest"]
    table = gpu_throughput.markdown(figures)
    assert "**lensq-tiny**" in table and "| caption | " in table and "| batch 1 | batch 2 |" in table
