"""Liveness (/healthz) and readiness (/readyz: the database and the broker answer)."""
from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text

from services.schemas import example_response
from workers.celery_app import app as celery_app

router = APIRouter(tags=["health"])


@router.get("/healthz", responses={200: example_response("The process is up", {"status": "ok"})})
def healthz() -> dict:
    """The API process is alive (checks nothing else)."""
    return {"status": "ok"}


def _database_ok(request: Request) -> str:
    try:
        with request.app.state.session_factory() as session:
            session.execute(text("SELECT 1"))
        return "ok"
    except Exception as exc:
        return f"error: {exc.__class__.__name__}: {exc}"[:300]


def _broker_ok() -> str:
    try:
        with celery_app.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, timeout=2)
        return "ok"
    except Exception as exc:
        return f"error: {exc.__class__.__name__}: {exc}"[:300]


@router.get(
    "/readyz",
    responses={
        200: example_response("Database and broker answer", {"status": "ok", "database": "ok", "broker": "ok"}),
        503: example_response("One of them does not", {"status": "unavailable", "database": "ok",
                                                       "broker": "error: OperationalError: connection refused"}),
    },
)
def readyz(request: Request) -> JSONResponse:
    """Ready to take jobs: the database answers a query and the broker accepts a connection."""
    checks = {"database": _database_ok(request), "broker": _broker_ok()}
    ready = all(value == "ok" for value in checks.values())
    headers = {} if ready else {"Retry-After": "5"}  # a load balancer or client may try again shortly
    return JSONResponse({"status": "ok" if ready else "unavailable", **checks}, status_code=200 if ready else 503,
                        headers=headers)
