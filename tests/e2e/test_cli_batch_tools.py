"""`lensq batch` to CSV (by suffix or --format), resuming past a cut line, its rate and ETA; `lensq jobs watch`."""
from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
import uuid

import pytest

from image_factory import data_url, shape_png
from polling import wait_until

CSV_HEADER = "ref,job_id,task,status,output,error,result"
# tqdm's meter as `lensq batch` and `lensq jobs watch` draw it: done/total [elapsed<remaining, rate].
METER = re.compile(r"\d+/\d+ \[\d\d:\d\d<\d\d:\d\d, +[\d.]+(img|job)/s\]")


def _lensq(*args: str, api, tenant, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "LENSQ_API_URL": api.url, "LENSQ_API_KEY": tenant.token}
    return subprocess.run([sys.executable, "-m", "services.cli", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def _folder(tmp_path, count: int, seed: int):
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(count):
        (folder / f"shape-{i:02d}.png").write_bytes(shape_png(seed + i))
    return folder


def _csv_rows(path) -> list[dict]:
    text = path.read_text()
    assert text.splitlines()[0] == CSV_HEADER
    return list(csv.DictReader(io.StringIO(text)))


@pytest.mark.timeout(240)
def test_batch_writes_csv_by_suffix_shows_rate_and_eta_and_resumes_past_a_cut_line(api, tenant, worker_pool,
                                                                                    tmp_path):
    worker_pool.ensure(1)
    folder, out = _folder(tmp_path, 6, seed=8000), tmp_path / "results.csv"
    args = ("batch", str(folder), "--task", "classify", "--labels", "circle", "rectangle", "triangle",
            "--out", str(out), "--chunk-size", "3")
    first = _lensq(*args, api=api, tenant=tenant)
    assert first.returncode == 0, first.stderr
    assert METER.search(first.stderr), first.stderr  # the bar says how fast and how long is left
    rows = _csv_rows(out)
    assert [row["ref"] for row in rows] == [f"shape-{i:02d}.png" for i in range(6)]
    assert all(row["status"] == "succeeded" and row["output"] in ("circle", "rectangle", "triangle") for row in rows)
    assert all(json.loads(row["result"])["label"] == row["output"] and uuid.UUID(row["job_id"]) for row in rows)

    lines = out.read_text().splitlines(keepends=True)
    out.write_text("".join(lines[:4]) + lines[4][:25])  # header, 3 rows, and a 4th row cut short by a crash
    resumed = _lensq(*args, api=api, tenant=tenant)
    assert resumed.returncode == 0, resumed.stderr
    assert "3 item(s) processed, 3 already" in resumed.stderr
    rows = _csv_rows(out)
    assert sorted(row["ref"] for row in rows) == [f"shape-{i:02d}.png" for i in range(6)]
    assert all(row["status"] == "succeeded" for row in rows)


@pytest.mark.timeout(240)
def test_batch_format_flag_wins_over_the_suffix_and_jsonl_resume_drops_a_cut_line(api, tenant, worker_pool,
                                                                                  tmp_path):
    worker_pool.ensure(1)
    folder = _folder(tmp_path, 4, seed=8100)
    as_csv, as_jsonl = tmp_path / "results.txt", tmp_path / "results.out"
    common = ("--task", "caption", "--chunk-size", "2")
    made_csv = _lensq("batch", str(folder), *common, "--out", str(as_csv), "--format", "csv", api=api, tenant=tenant)
    assert made_csv.returncode == 0, made_csv.stderr
    assert len(_csv_rows(as_csv)) == 4

    made_jsonl = _lensq("batch", str(folder), *common, "--out", str(as_jsonl), api=api, tenant=tenant)
    assert made_jsonl.returncode == 0, made_jsonl.stderr
    lines = as_jsonl.read_text().splitlines(keepends=True)
    as_jsonl.write_text("".join(lines[:2]) + lines[2][:30])
    resumed = _lensq("batch", str(folder), *common, "--out", str(as_jsonl), api=api, tenant=tenant)
    assert resumed.returncode == 0 and "2 item(s) processed, 2 already" in resumed.stderr, resumed.stderr
    rows = [json.loads(line) for line in as_jsonl.read_text().splitlines()]  # every line whole again
    assert sorted(row["ref"] for row in rows) == [f"shape-{i:02d}.png" for i in range(4)]

    wrong = _lensq("batch", str(folder), *common, "--out", str(as_jsonl), "--format", "csv", api=api, tenant=tenant)
    assert wrong.returncode == 2 and "not a LensQ CSV" in wrong.stderr


@pytest.mark.timeout(180)
def test_jobs_watch_follows_a_batch_to_its_end(api, tenant, worker_pool):
    worker_pool.ensure(1)
    items = [{"image": data_url(shape_png(8200 + i)), "ref": f"w-{i}"} for i in range(4)]
    with api.client(tenant) as http:
        batch = http.post("/v1/batches", json={"task": "caption", "items": items}).json()
    watched = _lensq("jobs", "watch", batch["id"], "--interval", "0.2", api=api, tenant=tenant)
    assert watched.returncode == 0, watched.stderr
    final = json.loads(watched.stdout)
    assert final["finished"] and final["counts"]["succeeded"] == 4
    assert "succeeded 4" in watched.stderr and "4/4" in watched.stderr, watched.stderr


def test_jobs_watch_exit_status_says_whether_every_job_succeeded(unserved_api, tenant):
    items = [{"image": data_url(shape_png(8300 + i))} for i in range(3)]
    with unserved_api.client(tenant) as http:
        batch = http.post("/v1/batches", json={"task": "caption", "items": items}).json()
        jobs = http.get("/v1/jobs", params={"batch_id": batch["id"]}).json()["data"]
        waiting = _lensq("jobs", "watch", batch["id"], "--interval", "0.2", "--timeout", "1",
                         api=unserved_api, tenant=tenant)  # nobody serves this API's queues
        for job in jobs:
            assert http.post(f"/v1/jobs/{job['id']}/cancel").status_code == 200
        wait_until(lambda: http.get(f"/v1/batches/{batch['id']}").json()["finished"], timeout=10, what="the batch")
    cancelled = _lensq("jobs", "watch", batch["id"], api=unserved_api, tenant=tenant)
    allowed = _lensq("jobs", "watch", batch["id"], "--allow-failed", api=unserved_api, tenant=tenant)
    unknown = _lensq("jobs", "watch", str(uuid.uuid4()), api=unserved_api, tenant=tenant)
    assert waiting.returncode == 3 and "queued 3" in waiting.stderr, waiting.stderr
    assert cancelled.returncode == 1 and json.loads(cancelled.stdout)["counts"]["cancelled"] == 3
    assert allowed.returncode == 0, allowed.stderr
    assert unknown.returncode == 2 and "batch_id" in unknown.stderr, unknown.stderr
