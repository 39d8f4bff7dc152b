"""Errors as JSON that names the field: {"error": {"field": ..., "message": ...}}; a lost database is a 503."""
from __future__ import annotations

import logging
from typing import TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import exc as sql_errors
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)

# How long a client should wait before retrying while the database is unreachable (a restart takes seconds).
DATABASE_RETRY_AFTER_SECONDS = 5
# What a lost database looks like through SQLAlchemy: refused or dropped connections, a full pool.
DATABASE_UNAVAILABLE = (sql_errors.OperationalError, sql_errors.InterfaceError, sql_errors.TimeoutError)

T = TypeVar("T")


class InputError(Exception):
    """A request LensQ refuses; `field` names what was wrong, `status` is the 4xx to answer with."""

    def __init__(self, field: str, message: str, status: int = 422, headers: dict[str, str] | None = None):
        super().__init__(f"{field}: {message}")
        self.field, self.message, self.status, self.headers = field, message, status, headers


def found(row: T | None, field: str) -> T:
    """The tenant's row, or a 404 naming the id field: another tenant's resource is answered as missing."""
    if row is None:
        raise InputError(field, f"no {field.removesuffix('_id')} with this id", 404)
    return row


def error_body(field: str, message: str) -> dict:
    """The JSON body of every LensQ error."""
    return {"error": {"field": field, "message": message}}


def _field_from_location(location: tuple) -> str:
    parts = [str(p) for p in location if p not in ("body", "query", "path", "header")]
    name = ""
    for part in parts:
        name += f"[{part}]" if part.isdigit() else (f".{part}" if name else part)
    return name or "body"


async def _on_input_error(_request: Request, exc: InputError) -> JSONResponse:
    return JSONResponse(error_body(exc.field, exc.message), status_code=exc.status, headers=exc.headers)


async def _on_validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
    first = exc.errors()[0]
    return JSONResponse(error_body(_field_from_location(tuple(first["loc"])), first["msg"]), status_code=422)


async def _on_database_unavailable(_request: Request, exc: Exception) -> JSONResponse:
    reason = next(iter(str(exc).splitlines()), "")[:300]
    log.warning("database unavailable, answering 503: %s: %s", exc.__class__.__name__, reason)
    return JSONResponse(error_body("database", "the database is unavailable; retry later"), status_code=503,
                        headers={"Retry-After": str(DATABASE_RETRY_AFTER_SECONDS)})


async def _on_http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
    field = "path" if exc.status_code in (404, 405) else "request"
    return JSONResponse(error_body(field, str(exc.detail)), status_code=exc.status_code, headers=exc.headers)


def install_error_handlers(app: FastAPI) -> None:
    """Makes every refusal, including FastAPI's own, answer in LensQ's error shape."""
    app.add_exception_handler(InputError, _on_input_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_error)
    for error in DATABASE_UNAVAILABLE:
        app.add_exception_handler(error, _on_database_unavailable)
