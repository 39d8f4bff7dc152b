"""A small HTTP client of the LensQ API, used by `lensq submit`, `lensq batch`, `lensq finetune` and the demo."""
from __future__ import annotations

import base64
import json
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx

FINAL = ("succeeded", "failed", "cancelled")
# Answers that say the API did nothing and when to ask again (a key's rate or a tenant's quota spent; the
# database unreachable): any request is safe to send again after Retry-After.
REFUSED_FOR_NOW = (429, 503)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetryPolicy:
    """How the client rides out a moment when the API cannot answer, so that an hour-long `lensq batch` does not
    end at a dropped connection or a restart.

    A request the API refused for now (429, 503) is sent again after its Retry-After. A request that got no answer
    is sent again, with backoff, when sending it twice does no harm: always if its connection was refused (nothing
    was sent); after a connection that dropped (reset, or closed by the server as it was reused) only a read or a
    submission carrying an Idempotency-Key (which the API answers with the first result), since a plain POST
    might have been stored before the connection dropped: its error is raised."""

    attempts: int = 8  # sends of one request, the first included: waits of 0.5 s doubling, about a minute in all
    first_backoff: float = 0.5  # seconds before the second send without an answer; doubles each time
    max_wait: float = 60.0  # longest single wait, whatever Retry-After says

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"RetryPolicy.attempts must be at least 1, not {self.attempts}")

    def wait_after_answer(self, response: httpx.Response) -> float | None:
        """Seconds to wait before sending again, or None when the answer is final."""
        if response.status_code not in REFUSED_FOR_NOW:
            return None
        try:
            retry_after = float(response.headers.get("Retry-After", ""))
        except ValueError:
            retry_after = self.first_backoff
        return min(max(retry_after, 0.0), self.max_wait)

    def wait_after_no_answer(self, attempt: int) -> float:
        return min(self.first_backoff * 2 ** (attempt - 1), self.max_wait)


def _repeatable(request: httpx.Request, error: httpx.TransportError) -> bool:
    """Whether sending `request` again after `error` does no harm: a connection that was never made carried
    nothing; after one that was, only a read or a keyed submission may go twice."""
    if isinstance(error, (httpx.ConnectError, httpx.ConnectTimeout)):
        return True
    return request.method in ("GET", "HEAD", "OPTIONS") or "Idempotency-Key" in request.headers


class LensqAPIError(Exception):
    """An error answer from the API, with the field it names."""

    def __init__(self, status: int, field: str, message: str):
        super().__init__(f"HTTP {status} {field}: {message}")
        self.status, self.field, self.message = status, field, message


class LensqUnreachable(LensqAPIError):
    """No answer from the API (connection refused, reset or dropped), after the retries the request allowed."""

    def __init__(self, url: str, cause: httpx.TransportError):
        Exception.__init__(self, f"no answer from {url}: {cause.__class__.__name__}: {cause}")
        self.status, self.field, self.message = None, "connection", str(cause)


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

    def __init__(self, base_url: str, api_key: str, timeout: float = 60, retry: RetryPolicy | None = None):
        self.http = httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {api_key}"}, timeout=timeout)
        self.retry = retry or RetryPolicy()

    def close(self) -> None:
        self.http.close()

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """One API call, sent again as self.retry allows: its last answer, checked (LensqAPIError), or
        LensqUnreachable when no answer came."""
        request = self.http.build_request(method, url, **kwargs)
        attempt = 1
        while True:
            try:
                response = self.http.send(request)
            except httpx.TransportError as exc:
                if attempt == self.retry.attempts or not _repeatable(request, exc):
                    raise LensqUnreachable(str(request.url), exc) from exc
                wait, why = self.retry.wait_after_no_answer(attempt), f"no answer ({exc.__class__.__name__}: {exc})"
            else:
                wait = self.retry.wait_after_answer(response)
                if wait is None or attempt == self.retry.attempts:
                    return _checked(response)
                why = f"HTTP {response.status_code}"
            log.warning("%s %s: %s; sending it again in %.1fs", method, request.url.path, why, wait)
            time.sleep(wait)
            attempt += 1

    def submit_job(self, fields: dict[str, Any], *, idempotency_key: str | None = None) -> dict:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return self.request("POST", "/v1/jobs", json=fields, headers=headers).json()

    def get_job(self, job_id: str) -> dict:
        return self.request("GET", f"/v1/jobs/{job_id}").json()

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
        return self.request("POST", "/v1/batches", json=body, headers=headers).json()

    def get_batch(self, batch_id: str) -> dict:
        return self.request("GET", f"/v1/batches/{batch_id}").json()

    def batch_results(self, batch_id: str) -> list[dict]:
        text = self.request("GET", f"/v1/batches/{batch_id}/results").text
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    # --- fine-tuning ------------------------------------------------------------------------------

    def upload_file(self, path: str, *, purpose: str) -> dict:
        """Stores a file through /v1/files (purpose fine-tune or batch)."""
        with open(path, "rb") as handle:
            files = {"file": (os.path.basename(path), handle, "application/jsonl")}
            return self.request("POST", "/v1/files", data={"purpose": purpose}, files=files,
                                timeout=max(self.http.timeout.read or 0, 300)).json()

    def create_fine_tuning_job(self, body: dict[str, Any]) -> dict:
        # The data checks read every line before answering: allow them time on a big file.
        return self.request("POST", "/v1/fine_tuning/jobs", json=body, timeout=600).json()

    def get_fine_tuning_job(self, job_id: str) -> dict:
        return self.request("GET", f"/v1/fine_tuning/jobs/{job_id}").json()

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
