"""One webhook attempt against a local server: redirects not followed, private addresses refused, timeouts."""
from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from db.network_addresses import allowed_networks
from db.webhooks import DueDelivery
from workers.config import WorkerSettings
from workers.webhook_delivery import post_once, retry_delay

LOOPBACK = allowed_networks(["127.0.0.1/32"])


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.path == "/slow":
            time.sleep(2)
        status, headers = {"/redirect": (307, {"Location": "/ok"}), "/gone": (410, {})}.get(self.path, (204, {}))
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", "0")
        self.end_headers()


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _attempt(url: str, allowed=LOOPBACK, timeout: float = 5.0):
    delivery = DueDelivery(id=uuid.uuid4(), event="job.succeeded", url=url, payload={"id": "x"}, attempt=1,
                           secret="whsec_test")
    settings = WorkerSettings(webhook_timeout_seconds=timeout)
    with httpx.Client(trust_env=False, follow_redirects=False) as client:
        return post_once(client, delivery, settings, allowed)


def test_a_2xx_is_delivered_and_anything_else_is_not(server):
    assert _attempt(server + "/ok").delivered
    gone = _attempt(server + "/gone")
    assert not gone.delivered and gone.status_code == 410 and not gone.permanent


def test_a_redirect_is_not_followed(server):
    result = _attempt(server + "/redirect")
    assert result.status_code == 307 and not result.delivered and result.error == "answered HTTP 307"


def test_a_private_address_is_refused_for_good_without_a_request(server):
    result = _attempt(server + "/ok", allowed=[])
    assert result.permanent and result.status_code is None and result.error.startswith("refused:")
    assert _attempt("http://169.254.169.254/latest/meta-data", allowed=LOOPBACK).permanent  # cloud metadata


def test_a_slow_receiver_times_out_and_is_retried_later(server):
    result = _attempt(server + "/slow", timeout=0.5)
    assert result.status_code is None and not result.permanent and "Timeout" in result.error


def test_retry_delays_double_with_jitter_up_to_the_cap():
    settings = WorkerSettings(webhook_retry_base_seconds=2, webhook_retry_max_seconds=60)
    for attempt, nominal in ((1, 2), (2, 4), (3, 8), (4, 16), (9, 60)):
        delays = [retry_delay(attempt, settings) for _ in range(50)]
        assert all(0.8 * nominal <= d <= 1.2 * nominal for d in delays), (attempt, min(delays), max(delays))
        assert len(set(delays)) > 1  # jittered, so failing deliveries do not return in lockstep
