"""Fetches a job's image from an http(s) URL for tenants allowed to, never reaching a private or internal address."""
from __future__ import annotations

import ipaddress
import socket
import time
from typing import Any

import httpx

# The address rules are shared with the workers' webhook deliveries, hence kept in db (both may import it).
from db.network_addresses import IPAddress, is_forbidden
from services.config import ServiceSettings
from services.errors import InputError

FIELD = "image_url"
MAX_URL_CHARS = 2048

def parse_image_url(value: Any) -> httpx.URL:
    """An absolute http(s) URL with a host and no credentials; else InputError naming image_url."""
    if not isinstance(value, str) or not value.strip():
        raise InputError(FIELD, "image_url must be an http(s) URL string")
    if len(value) > MAX_URL_CHARS:
        raise InputError(FIELD, f"image_url is {len(value)} characters, over the limit of {MAX_URL_CHARS}")
    try:
        url = httpx.URL(value.strip())
    except (httpx.InvalidURL, ValueError, TypeError) as exc:
        raise InputError(FIELD, f"image_url is not a valid URL: {exc}") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise InputError(FIELD, "image_url must be an absolute http:// or https:// URL")
    if url.userinfo:
        raise InputError(FIELD, "image_url must not carry a user name or password")
    return url


def _allowed_networks(settings: ServiceSettings) -> list:
    return [ipaddress.ip_network(cidr, strict=False) for cidr in settings.image_url_allow_cidrs]


def resolve_safely(url: httpx.URL, allowed: list) -> IPAddress:
    """The one address the fetch will connect to; refused if any address the name resolves to is forbidden."""
    host = url.raw_host.decode("ascii")
    try:
        infos = socket.getaddrinfo(host, url.port or (443 if url.scheme == "https" else 80), type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError, OSError) as exc:
        raise InputError(FIELD, f"host {host!r} could not be resolved: {exc}") from None
    # Every address is checked, not just the first, so a name with one public and one private record is refused.
    addresses = [ipaddress.ip_address(info[4][0].split("%", 1)[0]) for info in infos]
    if not addresses:
        raise InputError(FIELD, f"host {host!r} has no address")
    for address in addresses:
        if is_forbidden(address, allowed):
            raise InputError(FIELD, f"image_url's host {host!r} resolves to {address}, a private or reserved address")
    return addresses[0]


def _remaining(deadline: float, settings: ServiceSettings) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise InputError(FIELD, f"image_url took longer than {settings.image_url_timeout_seconds:g}s to fetch")
    return left


def _send_pinned(client: httpx.Client, url: httpx.URL, address: IPAddress, timeout: float) -> httpx.Response:
    """GET to the checked address itself, so no second DNS answer can move it; Host and SNI keep the name."""
    headers = {"Host": url.netloc.decode("ascii"), "Accept": "image/*", "Accept-Encoding": "identity"}
    extensions = {"sni_hostname": url.raw_host.decode("ascii")} if url.scheme == "https" else {}
    request = client.build_request("GET", url.copy_with(host=str(address)), headers=headers, extensions=extensions,
                                   timeout=timeout)
    try:
        return client.send(request, stream=True)
    except httpx.TimeoutException:
        raise InputError(FIELD, f"image_url did not answer within {timeout:.1f}s") from None
    except httpx.HTTPError as exc:
        raise InputError(FIELD, f"image_url could not be fetched: {exc}") from None


def _check_answer(response: httpx.Response, settings: ServiceSettings) -> None:
    if response.status_code != 200:
        raise InputError(FIELD, f"image_url answered HTTP {response.status_code}")
    # Only identity: a compressed answer could inflate past the cap inside a single read.
    if response.headers.get("content-encoding", "identity").strip().lower() != "identity":
        raise InputError(FIELD, "image_url answered with a Content-Encoding; only uncompressed bodies are accepted")
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > settings.max_image_bytes:
        raise InputError(FIELD, f"image_url's body is {declared} bytes, over the limit of {settings.max_image_bytes}",
                         413)


def _read_capped(response: httpx.Response, settings: ServiceSettings, deadline: float) -> bytes:
    """The body, cut off as soon as it passes the byte cap or the deadline."""
    chunks, size = [], 0
    try:
        for chunk in response.iter_raw():
            size += len(chunk)
            if size > settings.max_image_bytes:
                raise InputError(FIELD, f"image_url's body is over the limit of {settings.max_image_bytes} bytes", 413)
            _remaining(deadline, settings)
            chunks.append(chunk)
    except httpx.TimeoutException:
        raise InputError(FIELD, f"image_url took longer than {settings.image_url_timeout_seconds:g}s") from None
    except httpx.HTTPError as exc:
        raise InputError(FIELD, f"image_url's body could not be read: {exc}") from None
    return b"".join(chunks)


def _redirect_target(url: httpx.URL, response: httpx.Response) -> httpx.URL:
    location = response.headers.get("location")
    if not location:
        raise InputError(FIELD, f"image_url answered HTTP {response.status_code} without a Location")
    return parse_image_url(str(url.join(location)))


def fetch_image_url(value: Any, settings: ServiceSettings) -> bytes:
    """The bytes at an http(s) URL; every hop re-checked and pinned, redirects, size and time capped."""
    url = parse_image_url(value)
    allowed = _allowed_networks(settings)
    deadline = time.monotonic() + settings.image_url_timeout_seconds
    # trust_env=False: a proxy from the environment would do its own DNS, and the pinning would mean nothing.
    with httpx.Client(trust_env=False, follow_redirects=False) as client:
        for _hop in range(settings.image_url_max_redirects + 1):
            address = resolve_safely(url, allowed)
            response = _send_pinned(client, url, address, _remaining(deadline, settings))
            try:
                if not response.is_redirect:
                    _check_answer(response, settings)
                    return _read_capped(response, settings, deadline)
                url = _redirect_target(url, response)
            finally:
                response.close()
    raise InputError(FIELD, f"image_url redirected more than {settings.image_url_max_redirects} times")


def image_from_url(value: Any, allowed: bool, settings: ServiceSettings) -> bytes:
    """A job's image fetched from `image_url`, for a tenant that has image URLs switched on (403 otherwise)."""
    if not allowed:
        raise InputError(FIELD, "image URLs are not enabled for this tenant; send the image itself", 403)
    return fetch_image_url(value, settings)
