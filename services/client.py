"""A small HTTP client of the LensQ API, used by `lensq submit`, `lensq batch` and the demo."""
from __future__ import annotations

import base64
import json
import time
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
