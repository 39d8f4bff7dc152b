"""`make bench`: runs every benchmark script, each in its own process, and writes benchmarks/RESULTS.md."""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from benchmarks.figures import commit, machine

HERE = Path(__file__).parent
# In the order of the issue; each writes its RESULTS.md section as JSON (benchmarks.figures.write_section).
SCRIPTS = ("end_to_end", "model_throughput", "api_intake", "preprocess_draft", "worker_memory")


def run_script(name: str, extra: list[str], out_dir: Path) -> dict:
    out = out_dir / f"{name}.json"
    started = time.monotonic()
    command = [sys.executable, "-m", f"benchmarks.{name}", "--json", str(out), *extra]
    print("+", " ".join(command), flush=True)
    finished = subprocess.run(command, cwd=HERE.parent, env={**os.environ, "PYTHONPATH": str(HERE.parent)})
    if finished.returncode != 0 or not out.exists():
        return {"title": name, "markdown": f"**Failed** (exit {finished.returncode}); see the `make bench` output.",
                "figures": {}}
    section = json.loads(out.read_text())
    section["seconds"] = time.monotonic() - started
    return section


def gpu_section() -> str:
    import torch

    from benchmarks import gpu_throughput

    figures = gpu_throughput.committed_results()
    if figures is not None:
        return gpu_throughput.markdown(figures)
    if torch.cuda.is_available():
        return (f"A CUDA device is present ({torch.cuda.get_device_name(0)}): run `python -m "
                f"benchmarks.gpu_throughput --json benchmarks/gpu_results.json` and run make bench again.")
    return ("**Not measured: no GPU on this machine.** `benchmarks/gpu_throughput.py` measures both checkpoints in "
            "bf16 for every task, batch 1 to 256, on a machine with CUDA.")


def gpu_rate() -> tuple[str, float] | None:
    """One GPU worker's model rate R: lensq-tiny captions at their best batch, from the committed GPU figures."""
    from benchmarks import gpu_throughput

    figures = gpu_throughput.committed_results()
    tiny = figures["checkpoints"].get("lensq-tiny") if figures is not None else None
    if tiny is None:
        return None
    batch, rate = gpu_throughput.best_point(tiny["tasks"], "caption")
    return f"lensq-tiny captions at batch {batch} on one {figures['environment']['device']}", rate


def scale_arithmetic(sections: dict) -> str:
    """N GPU workers: where the ceiling moves once the model is no longer the bottleneck."""
    intake = sections.get("api_intake", {}).get("figures", {})
    singles, batch_items = intake.get("single_per_second"), intake.get("batch_items_per_second")
    if not singles:
        return ""
    return (
        "**Arithmetic for N GPU workers.** Each worker is one process on one GPU claiming its own batches "
        "(`FOR UPDATE SKIP LOCKED`), so model throughput adds up: N workers give N x R jobs/s, R being one GPU "
        "worker's rate at its best batch (benchmark 8). The service stops scaling where the shared parts saturate: "
        f"one API process takes about {singles:.0f} single submissions/s and {batch_items:.0f} batch items/s on this "
        "CPU (section 4); API processes scale out behind a load balancer, so the next ceiling is Postgres, which "
        "sees per batch of B jobs one claim and one result write (2 transactions per B jobs) plus one insert per "
        "submission. " + n_gpu_example(singles, batch_items))


def n_gpu_example(singles: float, batch_items: float) -> str:
    measured = gpu_rate()
    if measured is None:
        rate, source = 1000.0, "an assumed figure until benchmark 8 has run"
    else:
        source, rate = measured
        source += ", model time only (section 8)"
    need = 8 * rate
    return (f"For example, with R = {rate:,.0f} jobs/s per GPU ({source}), 8 GPUs would need {need:,.0f} "
            f"submissions/s: about {max(1, round(need / batch_items))} API process(es) taking batches, or about "
            f"{need / singles:.0f} API processes taking single submissions at this CPU's rates.")


def render(sections: dict, started: datetime, note: str) -> str:
    info = machine()
    lines = [
        "# LensQ benchmarks",
        "",
        f"Written by `make bench` (benchmarks/run_all.py) on {started:%Y-%m-%d %H:%M} UTC, commit {commit()}.",
        f"Machine: {info['cpu']}, {info['cores']} cores, no GPU; Python {info['python']}. "
        f"Load average when the run ended: {', '.join(f'{v:.1f}' for v in info['load_average'])}."
        + (f" {note}" if note else ""),
        "",
        "Ratios are measured side by side in the same run. Where a target is missed the figure is reported as "
        "measured, with the reason.",
        "",
    ]
    for name in SCRIPTS:
        if name in sections:
            section = sections[name]
            lines += [f"## {section['title']}", "", section["markdown"], ""]
            if name == "end_to_end":
                lines += [scale_arithmetic(sections), ""]
    lines += ["## 8. GPU", "", gpu_section(), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", default=",".join(SCRIPTS), help="comma-separated subset of " + ", ".join(SCRIPTS))
    parser.add_argument("--output", default=str(HERE / "RESULTS.md"))
    parser.add_argument("--note", default=os.environ.get("LENSQ_BENCH_NOTE", ""),
                        help="a line about the machine's load")
    parser.add_argument("--smoke", action="store_true", help="each script on a tiny input")
    args = parser.parse_args(argv)
    started = datetime.now(timezone.utc)
    with tempfile.TemporaryDirectory() as out_dir:
        sections = {name: run_script(name, ["--smoke"] if args.smoke else [], Path(out_dir))
                    for name in args.only.split(",")}
    # api_intake runs after end_to_end but its figures feed the scale-out arithmetic: render once all are in.
    Path(args.output).write_text(render(sections, started, args.note))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
