"""LENSQ_LOG_FORMAT=json: the API and a worker log one JSON object per line, with ids, and never a token or image."""
from __future__ import annotations

import base64
import json
import logging
import secrets

import httpx
import pytest

from db.structured_logs import JsonLogFormatter, log_scope
from image_factory import data_url, shape_png
from polling import wait_for_final
from worker_processes import WorkerPool

REQUIRED_FIELDS = {"time", "level", "logger", "message"}


@pytest.fixture(scope="module")
def json_stack(service_env, tmp_path_factory):
    """An API and a worker logging JSON, on queues of their own (so the run's other workers leave their jobs alone)."""
    from services.processes import api_command, free_port, start_process, stop_process, wait_until_ready

    env = {**service_env, "LENSQ_LOG_FORMAT": "json", "LENSQ_QUEUE_PREFIX": "jsonlogs"}
    folder = tmp_path_factory.mktemp("json-logs")
    port, api_log = free_port(), folder / "api.log"
    api = start_process(api_command(port=port, log_level="info"), env=env, log_path=api_log)
    workers = WorkerPool(env=env, log_dir=folder, name_prefix="json")
    try:
        wait_until_ready(f"http://127.0.0.1:{port}/healthz", process=api, timeout=60, log_path=api_log)
        [worker] = workers.start(1)
        yield f"http://127.0.0.1:{port}", api_log, worker.log_path
    finally:
        workers.stop_all()
        stop_process(api)


@pytest.fixture(scope="module")
def logged_run(json_stack, session_factory):
    """Real requests with a real token and a data-URL image (one good job, one refused image, one bad key)."""
    from db.queries import create_api_key, get_or_create_tenant

    url, api_log, worker_log = json_stack
    with session_factory.begin() as session:
        tenant = get_or_create_tenant(session, name=f"json-logs-{secrets.token_hex(3)}")
        _, token = create_api_key(session, tenant_id=tenant.id, name="logs")
        tenant_id = tenant.id
    image = shape_png(7, size=96)
    not_an_image = base64.b64encode(secrets.token_bytes(3000)).decode()
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as http:
        job = http.post("/v1/jobs", json={"task": "caption", "image": data_url(image)})
        assert job.status_code == 202, job.text
        refused = http.post("/v1/jobs", json={"task": "caption", "image": f"data:image/png;base64,{not_an_image}"})
        assert refused.status_code == 422, refused.text
        unknown = http.get("/v1/jobs", headers={"Authorization": f"Bearer {token[:-4]}AAAA"})
        assert unknown.status_code == 401
    job_id = job.json()["id"]
    wait_for_final(session_factory, [job_id], timeout=120)
    secrets_seen = {"token": token, "image": base64.b64encode(image).decode(), "not_an_image": not_an_image}
    return {"api": api_log, "worker": worker_log, "job_id": job_id, "tenant_id": str(tenant_id),
            "secrets": secrets_seen}


def _lines(path) -> list[dict]:
    """Every line of a log file as JSON (fails, quoting the line, if one is not).

    What a process prints before its logging is set up is not a log line: for a worker run as root, Celery's
    superuser warning, printed before it loads LensQ's code. The check starts at the first JSON line."""
    records = []
    lines = path.read_text(errors="replace").splitlines()
    first = next((i for i, line in enumerate(lines) if line.startswith("{")), len(lines))
    for line in lines[first:]:
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                pytest.fail(f"{path.name}: not a JSON line: {line[:300]!r}")
    return records


@pytest.mark.parametrize("process", ["api", "worker"])
def test_every_line_is_a_json_object_with_the_fields(logged_run, process):
    records = _lines(logged_run[process])
    assert records, f"the {process} logged nothing"
    for record in records:
        assert REQUIRED_FIELDS <= set(record), record


def test_lines_carry_the_ids_in_context(logged_run):
    api_records, worker_records = _lines(logged_run["api"]), _lines(logged_run["worker"])
    queued = [r for r in api_records if r.get("job_id") == logged_run["job_id"]]
    assert queued and all(r["tenant_id"] == logged_run["tenant_id"] for r in queued), api_records[-5:]
    written = [r for r in worker_records if "wrote 1 results" in r["message"]]
    assert written and all(r.get("lease") and r.get("queue") == "jsonlogs.caption" for r in written)


@pytest.mark.parametrize("process", ["api", "worker"])
def test_no_token_and_no_image_bytes_in_the_logs(logged_run, process):
    text = logged_run[process].read_text(errors="replace")
    for what, secret in logged_run["secrets"].items():
        assert secret not in text, f"the {process} log holds the {what}"
        assert secret[16:56] not in text, f"the {process} log holds part of the {what}"


def test_the_formatter_scrubs_what_a_careless_line_would_leak():
    """Defence in depth: a token, a bearer header, a secret and a data URL logged by mistake come out redacted."""
    token = "lq_" + secrets.token_urlsafe(32)
    payload = base64.b64encode(shape_png(3)).decode()
    record = logging.LogRecord("lensq.test", logging.WARNING, __file__, 1, "key %s header %s secret=%s image %s",
                               (token, f"Bearer {token}", "s3cr3t-value", f"data:image/png;base64,{payload}"), None)
    with log_scope(job_id="j-1"):
        line = json.loads(JsonLogFormatter().format(record))
    assert token not in line["message"] and token[len("lq_"):][10:] not in line["message"]
    assert "s3cr3t-value" not in line["message"] and payload[:40] not in line["message"]
    assert line["job_id"] == "j-1" and line["level"] == "WARNING" and line["logger"] == "lensq.test"
