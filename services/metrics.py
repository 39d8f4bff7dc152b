"""Prometheus metrics of the API: requests and latency by route template and status, the ledger, GET /metrics."""
from __future__ import annotations

import hmac
import os
import shutil
import time
from pathlib import Path

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from db.ledger_metrics import LedgerCollector
from services.config import ServiceSettings
from services.errors import InputError

MULTIPROCESS_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# A request no route matched (a 404, or a body refused before routing): one label, never the raw path.
UNMATCHED_ROUTE = "unmatched"

# This process's own series. Under several uvicorn workers with PROMETHEUS_MULTIPROC_DIR set, prometheus_client
# keeps their values in files there and /metrics adds up every process's (MultiProcessCollector).
HTTP_REGISTRY = CollectorRegistry()
HTTP_REQUESTS = Counter("lensq_http_requests", "HTTP requests answered, by method, route template and status",
                        ["method", "route", "status"], registry=HTTP_REGISTRY)
HTTP_LATENCY = Histogram("lensq_http_request_duration_seconds", "Time to answer a request, by method and route",
                         ["method", "route"], registry=HTTP_REGISTRY,
                         buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120))

router = APIRouter()


def multiprocess_dir() -> str | None:
    """The folder every API process writes its counts to, when several share the port; None for one process."""
    return os.environ.get(MULTIPROCESS_DIR_VARIABLE) or None


def prepare_multiprocess_dir() -> None:
    """Empties PROMETHEUS_MULTIPROC_DIR before the API's processes start (stale files would add old counts)."""
    folder = multiprocess_dir()
    if folder:
        shutil.rmtree(folder, ignore_errors=True)
        Path(folder).mkdir(parents=True, exist_ok=True)


def _route_label(scope: dict) -> str:
    """The matched route's template (/v1/jobs/{job_id}), so ids never become label values."""
    route = scope.get("route")
    return getattr(route, "path", None) or UNMATCHED_ROUTE


class HttpMetricsMiddleware:
    """Counts and times every HTTP request (pure ASGI: it runs in the request's own task, adding no hop)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started, status = time.perf_counter(), 500  # an exception that escapes the app is answered with a 500

        async def send_and_note_status(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note_status)
        finally:
            method = scope["method"] if scope["method"] in METHODS else "other"
            route = _route_label(scope)
            HTTP_REQUESTS.labels(method, route, str(status)).inc()
            HTTP_LATENCY.labels(method, route).observe(time.perf_counter() - started)


def scrape(collector: LedgerCollector) -> bytes:
    """The exposition text: every API process's request series, then the ledger's gauges read now."""
    registry = CollectorRegistry()
    if multiprocess_dir():
        MultiProcessCollector(registry)
    else:
        registry.register(HTTP_REGISTRY)
    registry.register(collector)
    return generate_latest(registry)


def _check_metrics_token(request: Request, settings: ServiceSettings) -> None:
    if settings.metrics_token is None:
        return
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip(), settings.metrics_token):
        raise InputError("Authorization", "GET /metrics needs the bearer token set in LENSQ_METRICS_TOKEN", 401,
                         {"WWW-Authenticate": "Bearer"})


@router.get("/metrics", include_in_schema=False)
def metrics(request: Request) -> Response:
    """Prometheus text exposition (a scrape target, not part of the client API)."""
    _check_metrics_token(request, request.app.state.settings)
    return Response(scrape(request.app.state.ledger_collector), media_type=CONTENT_TYPE_LATEST)


def install_metrics(app: FastAPI) -> None:
    """Adds the request metrics middleware, the ledger collector and GET /metrics, unless LENSQ_METRICS_ENABLED=0."""
    settings: ServiceSettings = app.state.settings
    if not settings.metrics_enabled:
        return
    app.state.ledger_collector = LedgerCollector(
        app.state.session_factory, totals=True, cache_seconds=settings.metrics_ledger_cache_seconds,
        timeout_seconds=settings.metrics_ledger_timeout_seconds)
    app.add_middleware(HttpMetricsMiddleware)
    app.include_router(router)
