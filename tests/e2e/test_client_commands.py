"""`lensq submit` and `lensq batch FILE.jsonl` against the API and real workers."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from image_factory import shape_png


def _lensq(*args: str, api, tenant) -> subprocess.CompletedProcess:
    env = {**os.environ, "LENSQ_API_URL": api.url, "LENSQ_API_KEY": tenant.token}
    return subprocess.run([sys.executable, "-m", "services.cli", *args], env=env, capture_output=True, text=True,
                          timeout=120)


@pytest.mark.timeout(180)
def test_submit_waits_and_prints_the_finished_job(api, tenant, two_workers, tmp_path):
    image = tmp_path / "shape.png"
    image.write_bytes(shape_png(5000))
    result = _lensq("submit", str(image), "--task", "classify", "--labels", "circle", "rectangle", "triangle",
                    api=api, tenant=tenant)
    assert result.returncode == 0, result.stderr
    job = json.loads(result.stdout)
    assert job["status"] == "succeeded" and job["result"]["label"] in ("circle", "rectangle", "triangle")


def test_submit_reports_a_refusal_with_its_field(api, tenant, tmp_path):
    image = tmp_path / "shape.png"
    image.write_bytes(shape_png(5001))
    result = _lensq("submit", str(image), "--task", "vqa", api=api, tenant=tenant)
    assert result.returncode == 2 and "question" in result.stderr


@pytest.mark.timeout(180)
def test_batch_from_a_jsonl_file_with_per_item_fields(api, tenant, two_workers, tmp_path):
    (tmp_path / "imgs").mkdir()
    lines = []
    for i in range(4):
        (tmp_path / "imgs" / f"{i}.png").write_bytes(shape_png(5100 + i))
        lines.append(json.dumps({"image": f"imgs/{i}.png", "text": f"post number {i}", "ref": f"post-{i}"}))
    source = tmp_path / "posts.jsonl"
    source.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out.jsonl"
    result = _lensq("batch", str(source), "--task", "sentiment", "--out", str(out), api=api, tenant=tenant)
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [row["ref"] for row in rows] == [f"post-{i}" for i in range(4)]
    assert all(row["status"] == "succeeded" and set(row["result"]) == {"label", "probabilities"} for row in rows)
