"""A small HTTP client of the LensQ API, used by `lensq submit`, `lensq batch`, `lensq finetune` and the demo."""
from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Iterator
from typing import Any

import httpx

FINAL = ("succeeded", "failed", "cancelled")


class LensqAPIError(Exception):
    """An error answer from the API, with the field it names."""

    def __init__(self, status: int, field: str, message: str):
        super().__init__(f"HTTP {status} {field}: {message}")
        self.status, self.field, self.message = status, field, message


def image_data_url(data: bytes) -> str:
    """Bytes as a base64 data: URL (the API sniffs the real type from the bytes)."""
    return "data:application/octet-stream;base64," + base64.b64encode(data).decode()


def _checked(response: httpx.Response) -> httpx.Response:
    if response.status_code >= 400:
        try:
            error = response.json()["error"]
            raise LensqAPIError(response.status_code, error["field"], error["message"])
        except (ValueError, KeyError, TypeError):
            raise LensqAPIError(response.status_code, "response", response.text[:500]) from None
    return response


class LensqClient:
    """Calls the API with a bearer key."""

    def __init__(self, base_url: str, api_key: str, timeout: float = 60):
        self.http = httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {api_key}"}, timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def submit_job(self, fields: dict[str, Any], *, idempotency_key: str | None = None) -> dict:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return _checked(self.http.post("/v1/jobs", json=fields, headers=headers)).json()

    def get_job(self, job_id: str) -> dict:
        return _checked(self.http.get(f"/v1/jobs/{job_id}")).json()

    def wait_for_job(self, job_id: str, *, timeout: float = 300, poll: float = 0.3) -> dict:
        """The job once it is final; TimeoutError after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            job = self.get_job(job_id)
            if job["status"] in FINAL:
                return job
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {job['status']} after {timeout:.0f}s")
            time.sleep(poll)

    def submit_batch(self, items: list[dict], *, task: str | None = None, idempotency_key: str | None = None) -> dict:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        body = {"items": items, **({"task": task} if task else {})}
        return _checked(self.http.post("/v1/batches", json=body, headers=headers)).json()

    def get_batch(self, batch_id: str) -> dict:
        return _checked(self.http.get(f"/v1/batches/{batch_id}")).json()

    def batch_results(self, batch_id: str) -> list[dict]:
        text = _checked(self.http.get(f"/v1/batches/{batch_id}/results")).text
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    # --- fine-tuning ------------------------------------------------------------------------------

    def upload_file(self, path: str, *, purpose: str) -> dict:
        """Stores a file through /v1/files (purpose fine-tune or batch)."""
        with open(path, "rb") as handle:
            files = {"file": (os.path.basename(path), handle, "application/jsonl")}
            return _checked(self.http.post("/v1/files", data={"purpose": purpose}, files=files,
                                           timeout=max(self.http.timeout.read or 0, 300))).json()

    def create_fine_tuning_job(self, body: dict[str, Any]) -> dict:
        # The data checks read every line before answering: allow them time on a big file.
        return _checked(self.http.post("/v1/fine_tuning/jobs", json=body, timeout=600)).json()

    def get_fine_tuning_job(self, job_id: str) -> dict:
        return _checked(self.http.get(f"/v1/fine_tuning/jobs/{job_id}")).json()

    def fine_tuning_events(self, job_id: str, *, after: str | None = None) -> Iterator[dict]:
        """The job's events as they land (one server-sent stream, reopened after `after` when the server ends it
        early), oldest first, until the job is final."""
        while True:
            params = {"stream": "true", **({"after": after} if after else {})}
            with self.http.stream("GET", f"/v1/fine_tuning/jobs/{job_id}/events", params=params,
                                  timeout=httpx.Timeout(60, read=120)) as response:
                if response.status_code >= 400:
                    response.read()
                    _checked(response)
                for name, data in _sse_events(response.iter_lines()):
                    if name == "done":
                        return
                    after = data["id"]
                    yield data


def _sse_events(lines: Iterator[str]) -> Iterator[tuple[str, dict]]:
    """(event name, JSON data) of each server-sent event; comments (keep-alives) and retry lines are skipped."""
    name, data = "message", []
    for line in lines:
        if not line:
            if data:
                yield name, json.loads("\n".join(data))
            name, data = "message", []
        elif line.startswith("event:"):
            name = line[len("event:"):].strip()
        elif line.startswith("data:"):
            data.append(line[len("data:"):].strip())
