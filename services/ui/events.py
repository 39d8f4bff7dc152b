"""The live list's server-sent events: a tenant's changed jobs, polled from the ledger, with keep-alives."""
from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta

from fastapi import Request
from fastapi.concurrency import run_in_threadpool

from db.models import utcnow
from db.queries import jobs_updated_since
from services.config import ServiceSettings
from services.ui.job_view import job_view

# A job's updated_at is the worker's clock when it wrote, visible only once it commits: each poll looks this far
# back and skips what it already sent, so a late commit or a small clock skew between machines loses nothing.
LOOKBACK = timedelta(seconds=5)
SNAPSHOT_JOBS = 50  # how many of the newest jobs a fresh page starts with
POLL_LIMIT = 500
RECONNECT_MS = 1000


def parse_last_event_id(value: str | None) -> datetime | None:
    """The change time a reconnecting browser got up to (its Last-Event-ID), or None for a fresh stream."""
    try:
        moment = datetime.fromisoformat(value) if value else None
    except ValueError:
        return None
    return moment if moment is not None and moment.tzinfo is not None else None


def sse_message(event: str, data: dict, event_id: str | None = None) -> str:
    """One event in text/event-stream framing (JSON has no raw newlines, so one data line)."""
    head = f"id: {event_id}\n" if event_id else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


class JobChanges:
    """What one stream has sent: each job's last change time, and how far the ledger has been read."""

    def __init__(self, since: datetime | None):
        self.cursor = since
        self.sent: dict[uuid.UUID, datetime] = {}

    def read(self, session_factory, *, tenant_id: uuid.UUID, batch_id: uuid.UUID | None, snapshot: int) -> list:
        """The jobs changed since the last read that this stream has not sent in that state yet."""
        since = None if self.cursor is None else self.cursor - LOOKBACK
        limit = snapshot if since is None else POLL_LIMIT
        with session_factory() as session:
            jobs = jobs_updated_since(session, tenant_id=tenant_id, since=since, limit=limit, batch_id=batch_id)
            fresh = [job for job in jobs if self.sent.get(job.id) != job.updated_at]
            views = [job_view(job) for job in fresh]
        for job in fresh:
            self.sent[job.id] = job.updated_at
        if since is not None and len(jobs) == limit:  # a full page: the next read starts at its last row
            self.cursor = jobs[-1].updated_at + LOOKBACK
        elif jobs:
            self.cursor = max([job.updated_at for job in jobs] + ([self.cursor] if self.cursor else []))
        elif self.cursor is None:
            self.cursor = utcnow()
        self._forget_older_than(self.cursor - 2 * LOOKBACK)
        return views

    def _forget_older_than(self, moment: datetime) -> None:
        self.sent = {job_id: changed for job_id, changed in self.sent.items() if changed >= moment}


async def job_events(request: Request, settings: ServiceSettings, *, tenant_id: uuid.UUID,
                     batch_id: uuid.UUID | None, snapshot: int) -> AsyncIterator[str]:
    """Yields the tenant's job changes as they land, a keep-alive when idle; ends when the client goes or at the
    stream's age limit (the browser reconnects with Last-Event-ID and carries on)."""
    changes = JobChanges(parse_last_event_id(request.headers.get("last-event-id")))
    started = last_sent = time.monotonic()
    yield f"retry: {RECONNECT_MS}\n\n"
    while time.monotonic() - started < settings.ui_events_max_seconds:
        if await request.is_disconnected():
            return
        views = await run_in_threadpool(changes.read, request.app.state.session_factory, tenant_id=tenant_id,
                                        batch_id=batch_id, snapshot=snapshot)
        for view in views:
            yield sse_message("job", view, changes.cursor.isoformat())
        if views:
            last_sent = time.monotonic()
        elif time.monotonic() - last_sent >= settings.ui_events_keepalive_seconds:
            yield ": keep-alive\n\n"
            last_sent = time.monotonic()
        await asyncio.sleep(settings.ui_events_poll_seconds)
