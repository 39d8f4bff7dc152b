"""The API client (behind `lensq submit`, `lensq batch`, `lensq jobs watch`) rides out a restart of the API and a
refusal for now (429/503 with Retry-After), and never sends twice a submission that might have been stored."""
from __future__ import annotations

import socket
import threading
import time

import httpx
import pytest

from image_factory import data_url, shape_png
from services.client import LensqAPIError, LensqClient, LensqUnreachable, RetryPolicy
from services.processes import api_command, free_port, start_process, stop_process, wait_until_ready

# Retries fast enough for a test, patient enough for an API process to start (a few seconds on a busy machine).
PATIENT = RetryPolicy(attempts=40, first_backoff=0.1, max_wait=1.0)


class UnservedApi:
    """The API on a fixed port, with a queue prefix no worker serves, that can be stopped and started again."""

    def __init__(self, env: dict[str, str], log_dir):
        self.env = {**env, "LENSQ_QUEUE_PREFIX": "unserved-retries"}
        self.port, self.log_path = free_port(), log_dir / "api.log"
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = None

    def start(self, *, wait: bool = True) -> None:
        self.process = start_process(api_command(port=self.port), env=self.env, log_path=self.log_path)
        if wait:
            wait_until_ready(f"{self.url}/healthz", process=self.process, timeout=60, log_path=self.log_path)

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)
            self.process = None


@pytest.fixture
def restartable_api(service_env, tmp_path):
    api = UnservedApi(service_env, tmp_path)
    api.start()
    yield api
    api.stop()


def counted_client(url: str, token: str, retry: RetryPolicy) -> tuple[LensqClient, list[str]]:
    """A client, and the list of every request it sends (each retry is one more)."""
    client = LensqClient(url, token, retry=retry)
    sent: list[str] = []
    client.http.event_hooks["request"].append(lambda request: sent.append(f"{request.method} {request.url.path}"))
    return client, sent


def caption_fields(seed: int) -> dict:
    return {"task": "caption", "image": data_url(shape_png(seed))}


@pytest.mark.timeout(120)
def test_reads_and_keyed_submissions_ride_out_a_restart(restartable_api, tenant):
    client, sent = counted_client(restartable_api.url, tenant.token, PATIENT)
    job = client.submit_job(caption_fields(7100))

    restartable_api.stop()
    restartable_api.start(wait=False)  # its first answers come a few seconds from now
    assert client.get_job(job["id"])["id"] == job["id"]
    assert sent.count(f"GET /v1/jobs/{job['id']}") > 1, "the first read found no API and was sent again"

    restartable_api.stop()
    restartable_api.start(wait=False)
    sent.clear()
    keyed = client.submit_job(caption_fields(7101), idempotency_key="retries-7101")
    assert len(sent) > 1 and set(sent) == {"POST /v1/jobs"}
    assert client.submit_job(caption_fields(7101), idempotency_key="retries-7101")["id"] == keyed["id"]
    client.close()


class HangUpServer:
    """A TCP server that reads each request and closes the connection without answering: what a client sees when
    the API dies, or a proxy drops the connection, after the request went out."""

    def __init__(self):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.requests: list[bytes] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return  # closed
            with connection:
                self.requests.append(connection.recv(65536))

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def hang_up_server():
    server = HangUpServer()
    yield server
    server.close()


@pytest.mark.timeout(60)
def test_a_plain_submission_whose_connection_dropped_is_not_sent_again(hang_up_server, tenant):
    client, sent = counted_client(hang_up_server.url, tenant.token, RetryPolicy(attempts=3, first_backoff=0.01))
    with pytest.raises(LensqUnreachable) as dropped:
        client.submit_job(caption_fields(7102))
    assert sent == ["POST /v1/jobs"], "it might have been stored before the connection dropped"
    assert dropped.value.field == "connection" and hang_up_server.url in str(dropped.value)

    sent.clear()
    with pytest.raises(LensqUnreachable):
        client.submit_job(caption_fields(7102), idempotency_key="retries-7102")
    with pytest.raises(LensqUnreachable):
        client.get_job("3b241101-e2bb-4255-8caf-4136c566a962")
    assert sent == ["POST /v1/jobs"] * 3 + ["GET /v1/jobs/3b241101-e2bb-4255-8caf-4136c566a962"] * 3
    assert len(hang_up_server.requests) == 7
    client.close()


@pytest.mark.timeout(60)
def test_a_refused_connection_is_tried_again_whatever_the_request(service_env, tenant, tmp_path):
    down = UnservedApi(service_env, tmp_path)  # never started: every connection is refused, nothing is sent
    client, sent = counted_client(down.url, tenant.token, RetryPolicy(attempts=3, first_backoff=0.01))
    with pytest.raises(LensqUnreachable) as refused:
        client.submit_job(caption_fields(7105))
    assert sent == ["POST /v1/jobs"] * 3 and isinstance(refused.value.__cause__, httpx.ConnectError)
    client.close()


@pytest.mark.timeout(120)
def test_a_refusal_for_now_is_sent_again_after_its_retry_after(start_api, make_tenant):
    """The tenant's quota of active jobs is 1: the second submission is refused (429, Retry-After) until the first
    is cancelled, and then goes through on the next send; a client out of attempts reports the 429."""
    api = start_api("quota-retries", LENSQ_QUEUE_PREFIX="unserved-quota", LENSQ_TENANT_MAX_ACTIVE_JOBS="1")
    tenant = make_tenant()
    client, sent = counted_client(api.url, tenant.token, RetryPolicy())  # waits the Retry-After it is given
    first = client.submit_job(caption_fields(7103))

    impatient, _ = counted_client(api.url, tenant.token, RetryPolicy(attempts=1))
    with pytest.raises(LensqAPIError) as refused:
        impatient.submit_job(caption_fields(7104))
    assert refused.value.status == 429
    impatient.close()

    def cancel_soon() -> None:
        time.sleep(0.5)
        with api.client(tenant) as http:
            http.post(f"/v1/jobs/{first['id']}/cancel").raise_for_status()

    canceller = threading.Thread(target=cancel_soon)
    canceller.start()
    sent.clear()
    second = client.submit_job(caption_fields(7104))
    canceller.join()
    assert second["status"] == "queued" and sent == ["POST /v1/jobs", "POST /v1/jobs"]
    client.close()


def test_retry_after_is_capped_and_answers_that_are_final_are_not_retried():
    policy = RetryPolicy(first_backoff=0.5, max_wait=10)
    answer = lambda status, **headers: httpx.Response(status, headers=headers)  # noqa: E731
    assert policy.wait_after_answer(answer(429, **{"Retry-After": "3"})) == 3
    assert policy.wait_after_answer(answer(503, **{"Retry-After": "3600"})) == 10
    assert policy.wait_after_answer(answer(503)) == 0.5
    assert all(policy.wait_after_answer(answer(status)) is None for status in (200, 202, 400, 401, 404, 422, 500))
    assert [policy.wait_after_no_answer(n) for n in (1, 2, 3, 6)] == [0.5, 1.0, 2.0, 10]
    with pytest.raises(ValueError, match="attempts"):
        RetryPolicy(attempts=0)
