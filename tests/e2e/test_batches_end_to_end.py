"""A 500-item batch completes with the right counts; `lensq batch` on a folder writes one line per image and resumes."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from image_factory import data_url, encode, photo_jpeg, shape_image, shape_png
from polling import wait_until


@pytest.mark.timeout(300)
def test_500_item_batch_completes_with_correct_counts(api, tenant, two_workers):
    items = []
    for i in range(500):
        if i % 5 == 0:
            items.append({"image": data_url(shape_png(i, size=32)), "task": "sentiment", "text": f"post {i}",
                          "ref": f"item-{i}"})
        else:
            items.append({"image": data_url(shape_png(i, size=32)), "labels": ["circle", "rectangle", "triangle"],
                          "ref": f"item-{i}"})
    with api.client(tenant) as http:
        response = http.post("/v1/batches", json={"task": "classify", "items": items})
        assert response.status_code == 202, response.text
        batch_id = response.json()["id"]
        batch = wait_until(lambda: (b := http.get(f"/v1/batches/{batch_id}").json())["finished"] and b,
                           timeout=240, interval=0.5, what="the 500-item batch")
        assert batch["total"] == 500 and batch["done"] == 500 and batch["progress"] == 1.0
        assert batch["counts"] == {"queued": 0, "running": 0, "succeeded": 500, "failed": 0, "cancelled": 0}
        rows = [json.loads(line) for line in http.get(f"/v1/batches/{batch_id}/results").text.splitlines()]
    assert [row["ref"] for row in rows] == [f"item-{i}" for i in range(500)]
    assert all(row["status"] == "succeeded" for row in rows)
    assert {row["task"] for row in rows} == {"classify", "sentiment"}
    assert all(row["result"]["label"] in ("circle", "rectangle", "triangle") for row in rows if row["task"] == "classify")


def _lensq_batch(folder: Path, out: Path, api, tenant) -> subprocess.CompletedProcess:
    env = {**os.environ, "LENSQ_API_URL": api.url, "LENSQ_API_KEY": tenant.token}
    return subprocess.run([sys.executable, "-m", "services.cli", "batch", str(folder), "--task", "vqa",
                           "--question", "what shape is in the image?", "--out", str(out), "--chunk-size", "5"],
                          env=env, capture_output=True, text=True, timeout=180)


@pytest.mark.timeout(300)
def test_lensq_batch_on_a_folder_writes_one_line_per_image_and_resumes(api, tenant, two_workers, tmp_path):
    folder = tmp_path / "images"
    (folder / "photos").mkdir(parents=True)
    for i in range(12):
        (folder / f"shape-{i:02d}.png").write_bytes(shape_png(i))
    (folder / "photos" / "cat.jpg").write_bytes(photo_jpeg("chelsea"))
    (folder / "shape.webp").write_bytes(encode(shape_image(40), "WEBP"))
    (folder / "notes.txt").write_text("not an image, not sent")
    out = tmp_path / "results.jsonl"

    first = _lensq_batch(folder, out, api, tenant)
    assert first.returncode == 0, first.stderr
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    expected_refs = {f"shape-{i:02d}.png" for i in range(12)} | {"photos/cat.jpg", "shape.webp"}
    assert len(lines) == 14 and {row["ref"] for row in lines} == expected_refs
    assert all(row["status"] == "succeeded" and isinstance(row["result"]["answer"], str) for row in lines)

    kept = out.read_text().splitlines()[:9]  # as if the run had been interrupted after 9 results
    out.write_text("\n".join(kept) + "\n")
    resumed = _lensq_batch(folder, out, api, tenant)
    assert resumed.returncode == 0, resumed.stderr
    assert "5 item(s) processed, 9 already" in resumed.stderr
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == 14 and {row["ref"] for row in lines} == expected_refs
