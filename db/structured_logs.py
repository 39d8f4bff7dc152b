"""Log lines as JSON or text, carrying the ledger ids in context and scrubbed of secrets and image data.

It lives in db because db is the one package both the API (services) and the workers import, and it needs nothing
but the standard library: the import rule keeps services away from workers and workers away from services.
"""
from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime, timezone
from typing import Any

LOG_FORMATS = ("text", "json")
# The ids a log line carries when the code that logs knows them (see bind_log_context).
CONTEXT_FIELDS = ("tenant_id", "job_id", "batch_id", "lease", "task", "queue")

# One mutable dict per request or batch: a thread pool call copies the context but shares this dict, so an id bound
# deep inside a route is still there when the request's last line is written.
_log_context: ContextVar[dict[str, str] | None] = ContextVar("lensq_log_context", default=None)

# What never reaches a log line, whoever logs it: API tokens, bearer headers, secrets, image bytes as base64.
_REDACTIONS = (
    (re.compile(r"(lq_[A-Za-z0-9_-]{8})[A-Za-z0-9_-]{12,}"), r"\1…[redacted]"),
    (re.compile(r"(?i)(bearer\s+)[^\s\"',]+"), r"\1[redacted]"),
    (re.compile(r"(?i)((?:secret|token|password|api_key)[\"']?\s*[:=]\s*[\"']?)[^\s\"',}]+"), r"\1[redacted]"),
    (re.compile(r"(data:[\w/.+-]*;base64,)[A-Za-z0-9+/=_-]+"), r"\1[redacted]"),
    (re.compile(r"[A-Za-z0-9+/_-]{120,}={0,2}"), "[long base64-like text redacted]"),
)


def redact(text: str) -> str:
    """`text` with tokens, secrets and base64 payloads replaced."""
    for pattern, replacement in _REDACTIONS:
        text = pattern.sub(replacement, text)
    return text


def bind_log_context(**ids: Any) -> None:
    """Adds ids (job_id=…, tenant_id=…) to every later log line of this request or batch; None values are skipped."""
    values = {name: str(value) for name, value in ids.items() if value is not None}
    current = _log_context.get()
    if current is None:
        _log_context.set(values)
    else:
        current.update(values)


@contextmanager
def log_scope(**ids: Any) -> Iterator[None]:
    """A fresh context for one request or batch: ids bound inside it vanish when it ends."""
    token = _log_context.set({})
    try:
        bind_log_context(**ids)
        yield
    finally:
        _log_context.reset(token)


def context_ids(record: logging.LogRecord) -> dict[str, str]:
    """The ids in context, plus any given to this one call as `extra=`."""
    ids = dict(_log_context.get() or {})
    for name in CONTEXT_FIELDS:
        value = getattr(record, name, None)
        if value is not None:
            ids[name] = str(value)
    return ids


def _message_and_exception(formatter: logging.Formatter, record: logging.LogRecord) -> tuple[str, str | None]:
    message = record.getMessage()
    exception = formatter.formatException(record.exc_info) if record.exc_info else record.exc_text
    return redact(message), redact(exception) if exception else None


class JsonLogFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, pid, then the ids in context."""

    def format(self, record: logging.LogRecord) -> str:
        message, exception = _message_and_exception(self, record)
        line = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": message,
            "pid": record.process,
            **context_ids(record),
        }
        if exception:
            line["exception"] = exception
        return json.dumps(line, ensure_ascii=False, default=str)


class TextLogFormatter(logging.Formatter):
    """A readable line (`time level logger: message [ids]`), redacted like the JSON one."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        message, exception = _message_and_exception(self, record)
        ids = " ".join(f"{name}={value}" for name, value in context_ids(record).items())
        text = f"{self.formatTime(record)} {record.levelname} {record.name}: {message}" + (f" [{ids}]" if ids else "")
        return f"{text}\n{exception}" if exception else text


def make_formatter(log_format: str) -> logging.Formatter:
    """The formatter for a LENSQ_LOG_FORMAT value."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}, not {log_format!r}")
    return JsonLogFormatter() if log_format == "json" else TextLogFormatter()


class _LensqHandler(logging.StreamHandler):
    """The root handler this module installs (told apart so a second set-up replaces it instead of adding one)."""


def configure_logging(log_format: str, *, level: str = "INFO", adopt: tuple[str, ...] = ()) -> None:
    """Root logs to stderr in `log_format`; the handlers of the `adopt` loggers (a server's own) get the same format."""
    formatter = make_formatter(log_format)
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, _LensqHandler)]:
        root.removeHandler(handler)
    handler = _LensqHandler(sys.stderr)
    handler.setFormatter(formatter)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in adopt:
        for adopted in logging.getLogger(name).handlers:
            adopted.setFormatter(formatter)


class RedactingFilter(logging.Filter):
    """Scrubs a record's message in place, for handlers that keep a format of their own (Celery's text lines)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True
