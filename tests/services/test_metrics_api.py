"""GET /metrics on the API: requests by route template and status, the ledger's gauges, several API processes."""
from __future__ import annotations

import json
import sys
import uuid

import httpx
import pytest

from image_factory import data_url, shape_png
from metrics_text import label_values, scrape, total
from polling import wait_until

ROUTE = "/v1/jobs/{job_id}"


def test_requests_are_counted_by_route_template_and_status(api, tenant):
    before = scrape(f"{api.url}/metrics")
    missing = uuid.uuid4()
    with api.client(tenant) as http:
        assert http.get(f"/v1/jobs/{missing}").status_code == 404
        assert http.get(f"/v1/jobs/{missing}").status_code == 404
        assert http.get(f"/no/such/page/{missing}").status_code == 404
    after = scrape(f"{api.url}/metrics")
    counted = [total(s, "lensq_http_requests_total", method="GET", route=ROUTE, status="404") for s in (before, after)]
    assert counted[1] - counted[0] == 2
    assert total(after, "lensq_http_requests_total", route="unmatched", status="404") >= 1
    assert total(after, "lensq_http_request_duration_seconds_count", method="GET", route=ROUTE) >= 2
    assert not any(str(missing) in route for route in label_values(after, "route")), "an id became a label value"


def test_queue_depth_is_read_from_the_ledger(unserved_api, tenant):
    """Jobs nobody serves stay queued: the scrape reads them from the ledger, per task."""
    with unserved_api.client(tenant) as http:
        for index in range(3):
            job = {"task": "vqa", "image": data_url(shape_png(90 + index)), "question": "what shape?"}
            assert http.post("/v1/jobs", json=job).status_code == 202
    samples = scrape(f"{unserved_api.url}/metrics")
    assert total(samples, "lensq_queue_depth", task="vqa") >= 3
    assert total(samples, "lensq_queue_oldest_seconds", task="vqa") >= 0
    assert {s.labels["task"] for s in samples if s.name == "lensq_queue_depth"} == {"caption", "vqa", "sentiment",
                                                                                     "classify"}
    assert total(samples, "lensq_ledger_up") == 1


@pytest.fixture(scope="module")
def two_process_api(service_env, tmp_path_factory):
    """`lensq serve --workers 2` with PROMETHEUS_MULTIPROC_DIR, a metrics token and JSON logs."""
    from services.processes import free_port, start_process, stop_process, wait_until_ready

    folder = tmp_path_factory.mktemp("multiprocess-api")
    env = {**service_env, "PROMETHEUS_MULTIPROC_DIR": str(folder / "prometheus"), "LENSQ_METRICS_TOKEN": "scrape-me",
           "LENSQ_LOG_FORMAT": "json"}
    port, log_path = free_port(), folder / "api.log"
    command = [sys.executable, "-m", "services.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
               "--workers", "2"]
    process = start_process(command, env=env, log_path=log_path)
    try:
        wait_until_ready(f"http://127.0.0.1:{port}/healthz", process=process, timeout=90, log_path=log_path)
        yield f"http://127.0.0.1:{port}", folder / "prometheus", log_path
    finally:
        stop_process(process)


def test_several_api_processes_add_up_their_counts(two_process_api):
    url, folder, _ = two_process_api
    token = {"Authorization": "Bearer scrape-me"}
    before = total(scrape(f"{url}/metrics", token), "lensq_http_requests_total", route="/healthz", status="200")
    sent = 0

    def both_processes_answered() -> bool:
        """Five more requests, a new connection each (the kernel spreads them over the processes that accept)."""
        nonlocal sent
        for _ in range(5):
            assert httpx.get(f"{url}/healthz", timeout=10).status_code == 200
            sent += 1
        return len(list(folder.glob("counter_*.db"))) >= 2  # each process keeps its counts in a file of its own

    wait_until(both_processes_answered, timeout=60, interval=0.1, what="requests answered by both API processes")
    for _ in range(6):  # whichever process answers the scrape, it reports every process's requests
        samples = scrape(f"{url}/metrics", token)
        assert total(samples, "lensq_http_requests_total", route="/healthz", status="200") - before == sent


def test_metrics_token_is_required_when_set(two_process_api):
    url, _, log_path = two_process_api
    refused = httpx.get(f"{url}/metrics", timeout=10)
    assert refused.status_code == 401
    assert refused.json()["error"]["field"] == "Authorization"
    wrong = httpx.get(f"{url}/metrics", headers={"Authorization": "Bearer nope"}, timeout=10)
    assert wrong.status_code == 401
    # `lensq serve` hands uvicorn the JSON log set-up too: its supervisor's lines are JSON like the app's.
    records = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    assert any(r["logger"].startswith("uvicorn") for r in records)
