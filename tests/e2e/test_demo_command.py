"""`lensq demo`: the embedded default (SQLite + Celery over SQLAlchemy) end to end, as `make demo` runs it."""
from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.timeout(300)
def test_demo_runs_every_task_on_the_samples_and_exits_0(tmp_path, reference_pipeline):
    result = subprocess.run([sys.executable, "-m", "services.cli", "demo", "--dir", str(tmp_path / "demo")],
                            capture_output=True, text=True, timeout=280, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    table = result.stdout
    assert "model: lensq-tiny@" in table
    for name in ("red-circle.png", "cat.jpg", "rocket.jpg"):
        for task in ("caption", "vqa", "sentiment", "classify"):
            assert any(line.split()[:2] == [name, task] for line in table.splitlines()), (name, task)
    assert "(not finished)" not in table and "FAILED" not in table
