"""image_url: off unless the tenant's switch is on; no private, loopback or metadata address, even by redirect; capped.

A real HTTP server on 127.0.0.1 serves the images; only the `url_api` fixture's setting allows that address."""
from __future__ import annotations

import ipaddress
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from db.models import Tenant
from image_factory import encode, shape_image
from services.image_urls import is_forbidden

GOOD_PNG = encode(shape_image(3, size=40), "PNG")
CAP = 2_000_000  # the test API's LENSQ_MAX_IMAGE_BYTES
TIMEOUT = 2.0  # the URL API's LENSQ_IMAGE_URL_TIMEOUT_SECONDS


# --- a small image server -----------------------------------------------------------------------

class ImageHandler(BaseHTTPRequestHandler):
    """Serves the test's paths; records the Host header of the last request."""

    hosts: list[str] = []

    def log_message(self, *args) -> None:
        pass

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None, length: bool = True):
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if length:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _drip(self, seconds_per_byte: float) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "10000")
        self.end_headers()
        for _ in range(10000):
            self.wfile.write(b"\0")
            self.wfile.flush()
            time.sleep(seconds_per_byte)

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        ImageHandler.hosts.append(self.headers.get("Host", ""))
        path, _, query = self.path.partition("?")
        try:
            self._route(path, query)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the API hung up on purpose: that is what the caps do

    def _route(self, path: str, query: str) -> None:
        if path == "/good.png":
            self._send(200, GOOD_PNG, {"Content-Type": "image/png"})
        elif path == "/redirect":
            self._send(302, headers={"Location": query})
        elif path == "/loop":
            self._send(302, headers={"Location": "/loop"})
        elif path == "/big":
            self._send(200, bytes(CAP + 1000), {"Content-Type": "image/png"})
        elif path == "/big-no-length":  # HTTP/1.0, no Content-Length: the body ends when the server closes
            self._send(200, bytes(CAP + 100_000), {"Content-Type": "image/png"}, length=False)
        elif path == "/drip":
            self._drip(0.05)
        elif path == "/stall":
            self.send_response(200)
            self.send_header("Content-Length", "100")
            self.end_headers()
            time.sleep(TIMEOUT * 3)
        elif path == "/not-an-image.png":
            self._send(200, b"<html>surprise</html>", {"Content-Type": "image/png"})
        elif path == "/gzip":
            self._send(200, GOOD_PNG, {"Content-Encoding": "gzip"})
        else:
            self._send(404, b"no")


@pytest.fixture(scope="module")
def image_server() -> Iterator[str]:
    """http://127.0.0.1:<port>, serving in a thread."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), ImageHandler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def url_api(service_env, tmp_path_factory) -> Iterator[str]:
    """The URL of an API with 127.0.0.1/32 allowed to image URLs (the test setting) and a short fetch timeout."""
    from services.processes import api_command, free_port, start_process, stop_process, wait_until_ready

    env = {**service_env, "LENSQ_QUEUE_PREFIX": "unserved", "LENSQ_IMAGE_URL_ALLOW_CIDRS": '["127.0.0.1/32"]',
           "LENSQ_IMAGE_URL_TIMEOUT_SECONDS": str(TIMEOUT)}
    port, log_path = free_port(), tmp_path_factory.mktemp("url-api") / "api.log"
    process = start_process(api_command(port=port), env=env, log_path=log_path)
    url = f"http://127.0.0.1:{port}"
    wait_until_ready(f"{url}/healthz", process=process, timeout=60, log_path=log_path)
    yield url
    stop_process(process)


@pytest.fixture
def url_tenant(make_tenant, session_factory):
    """A tenant with image URLs switched on."""
    tenant = make_tenant()
    with session_factory.begin() as session:
        session.get(Tenant, tenant.id).allow_image_urls = True
    return tenant


@pytest.fixture(scope="module")
def default_api(unserved_api) -> str:
    """The URL of the run's API with the default settings: no address range allowed beyond the public internet."""
    return unserved_api.url


def _submit(api_url: str, tenant, image_url) -> httpx.Response:
    with httpx.Client(base_url=api_url, headers=tenant.headers, timeout=30) as http:
        return http.post("/v1/jobs", json={"task": "caption", "image_url": image_url})


def _assert_refused(response, status: int | None = None, words: str = "") -> None:
    assert 400 <= response.status_code < 500, response.text
    assert status is None or response.status_code == status, response.text
    assert response.json()["error"]["field"] == "image_url"
    assert words in response.json()["error"]["message"], response.text


# --- default settings: nothing internal is reachable -----------------------------------------------

def test_default_settings_refuse_every_internal_address(default_api, url_tenant, image_server):
    port = image_server.rsplit(":", 1)[1]
    for url in (f"http://127.0.0.1:{port}/good.png", "http://10.0.0.7/cat.png", "http://169.254.169.254/latest/",
                f"http://[::1]:{port}/good.png", f"http://localhost:{port}/good.png", f"http://2130706433:{port}/a.png",
                f"http://[::ffff:127.0.0.1]:{port}/good.png", "http://100.64.0.1/cat.png", f"http://0.0.0.0:{port}/x",
                "http://[fd00:ec2::254]/latest/", "http://192.168.1.1/router.png", "http://224.0.0.1/x"):
        _assert_refused(_submit(default_api, url_tenant, url), 422, "private or reserved")


def test_only_http_and_https_urls(default_api, url_tenant):
    for url in ("file:///etc/passwd", "gopher://127.0.0.1:6379/_FLUSHALL", "ftp://example.com/a.png",
                "//example.com/a.png", "http://user:secret@example.com/a.png", "not a url", 5):
        _assert_refused(_submit(default_api, url_tenant, url), 422)


def test_a_tenant_without_the_switch_is_refused(url_api, tenant, image_server):
    _assert_refused(_submit(url_api, tenant, f"{image_server}/good.png"), 403, "not enabled")


def test_the_forbidden_ranges():
    forbidden = ("127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.0.1", "169.254.169.254", "100.64.0.1", "0.0.0.0",
                 "224.0.0.251", "255.255.255.255", "::1", "fe80::1", "fd00:ec2::254", "::ffff:10.0.0.1",
                 "64:ff9b::a00:1", "2002:a00:1::1", "fec0::1", "ff02::1")
    for address in forbidden:
        assert is_forbidden(ipaddress.ip_address(address), []), address
    for address in ("93.184.215.14", "2606:4700:4700::1111"):
        assert not is_forbidden(ipaddress.ip_address(address), []), address
    loopback_only = [ipaddress.ip_network("127.0.0.1/32")]
    assert not is_forbidden(ipaddress.ip_address("127.0.0.1"), loopback_only)
    assert is_forbidden(ipaddress.ip_address("127.0.0.2"), loopback_only)


# --- 127.0.0.1 allowed by the test setting: fetching, redirects, caps ---------------------------

def test_an_enabled_tenant_fetches_the_image(url_api, url_tenant, image_server, session_factory):
    response = _submit(url_api, url_tenant, f"{image_server}/good.png")
    assert response.status_code == 202, response.text
    redirected = _submit(url_api, url_tenant, f"{image_server}/redirect?/good.png")
    assert redirected.status_code == 202, redirected.text
    assert redirected.json()["image_sha256"] == response.json()["image_sha256"]


def test_the_connection_is_pinned_and_keeps_the_host_name(url_api, url_tenant, image_server):
    if {info[4][0] for info in socket.getaddrinfo("localhost", 80, type=socket.SOCK_STREAM)} != {"127.0.0.1"}:
        pytest.skip("localhost resolves to more than 127.0.0.1 here, and only 127.0.0.1/32 is allowed")
    port = image_server.rsplit(":", 1)[1]
    response = _submit(url_api, url_tenant, f"http://localhost:{port}/good.png")
    assert response.status_code == 202, response.text
    assert ImageHandler.hosts[-1] == f"localhost:{port}"


def test_every_redirect_is_checked_again(url_api, url_tenant, image_server):
    port = image_server.rsplit(":", 1)[1]
    for target in ("http://169.254.169.254/latest/meta-data/", "http://10.0.0.7/cat.png",
                   f"http://127.0.0.2:{port}/good.png", f"http://[::1]:{port}/good.png", "file:///etc/passwd"):
        _assert_refused(_submit(url_api, url_tenant, f"{image_server}/redirect?{target}"), 422)
    _assert_refused(_submit(url_api, url_tenant, f"{image_server}/loop"), 422, "redirected more than")


def test_oversized_answers_are_cut_off(url_api, url_tenant, image_server):
    _assert_refused(_submit(url_api, url_tenant, f"{image_server}/big"), 413)
    _assert_refused(_submit(url_api, url_tenant, f"{image_server}/big-no-length"), 413)
    _assert_refused(_submit(url_api, url_tenant, f"{image_server}/gzip"), 422, "Content-Encoding")


def test_slow_answers_are_cut_off(url_api, url_tenant, image_server):
    for path in ("/drip", "/stall"):
        started = time.monotonic()
        _assert_refused(_submit(url_api, url_tenant, f"{image_server}{path}"), 422)
        assert time.monotonic() - started < TIMEOUT + 3, f"{path} was not cut off at the deadline"


def test_fetched_bytes_get_the_same_image_checks(url_api, url_tenant, image_server):
    _assert_refused(_submit(url_api, url_tenant, f"{image_server}/not-an-image.png"), 422, "not an image")
    _assert_refused(_submit(url_api, url_tenant, f"{image_server}/missing.png"), 422, "HTTP 404")
