"""Small helpers every benchmark shares: medians and percentiles, the machine and commit, the section format."""
from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable


def median(values: list[float]) -> float:
    return statistics.median(values)


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100), by linear interpolation between the nearest ranks."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def repeat(measure: Callable[[], float], times: int) -> list[float]:
    return [measure() for _ in range(times)]


def timed(call: Callable[[], object]) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> dict[str, object]:
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "python": platform.python_version(),
            "load_average": os.getloadavg()}


def commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True)
        # RESULTS.md itself is what make bench rewrites: a previous run's copy of it is no change to what is measured.
        dirty = subprocess.run(["git", "status", "--porcelain", "--", ".", ":!benchmarks/RESULTS.md"],
                               capture_output=True, text=True).stdout.strip()
        return head.stdout.strip() + (" (with uncommitted changes)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def write_section(path: str | None, title: str, markdown: str, figures: dict) -> None:
    """A benchmark's result: its RESULTS.md section and the raw figures, as JSON for benchmarks.run_all."""
    print(f"## {title}\n\n{markdown}\n")
    if path:
        with open(path, "w") as out:
            json.dump({"title": title, "markdown": markdown, "figures": figures, "machine": machine()}, out, indent=2,
                      default=str)


def table(header: list[str], rows: list[list[object]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)
