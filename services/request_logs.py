"""The API's log set-up: text or JSON lines (LENSQ_LOG_FORMAT), uvicorn's loggers too, a context per request."""
from __future__ import annotations

import logging

from fastapi import FastAPI

from db.structured_logs import configure_logging, log_scope, make_formatter
from services.config import ServiceSettings

# uvicorn's loggers keep their own handlers (propagate=False): they get our formatter instead of being duplicated.
UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access")
# Libraries whose INFO lines would log every outgoing URL (an image URL may carry a signature in its query).
QUIET_LOGGERS = ("httpx", "httpcore")


def uvicorn_log_config(log_format: str, level: str = "INFO") -> dict:
    """A logging.config dict for uvicorn.run, so the supervisor of several API processes logs in the same format."""
    make_formatter(log_format)  # refuses an unknown format before uvicorn starts
    formatter = "db.structured_logs.JsonLogFormatter" if log_format == "json" else "db.structured_logs.TextLogFormatter"
    handler = {"class": "logging.StreamHandler", "formatter": "lensq", "stream": "ext://sys.stderr"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"lensq": {"()": formatter}},
        "handlers": {"lensq": handler},
        "loggers": {name: {"handlers": ["lensq"], "level": level.upper(), "propagate": False}
                    for name in ("uvicorn", "uvicorn.access")},
    }


class LogContextMiddleware:
    """A fresh log context per request: the ids a route binds (tenant, job) never reach another request's lines."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        with log_scope():
            await self.app(scope, receive, send)


def install_request_logs(app: FastAPI) -> None:
    """Sets this process's log format and level from the app's settings and adds the per-request context."""
    settings: ServiceSettings = app.state.settings
    configure_logging(settings.log_format, level=settings.log_level, adopt=UVICORN_LOGGERS)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    app.add_middleware(LogContextMiddleware)
