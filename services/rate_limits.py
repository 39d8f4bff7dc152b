"""Per-key request rate (counters in Redis shared by every API process, or in-process) and per-tenant job quota."""
from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Protocol

import redis
import redis.asyncio
from sqlalchemy.orm import Session

from db.queries import count_active_jobs, lock_tenant_jobs
from services.config import ServiceSettings
from services.errors import InputError
from workers.celery_app import app as celery_app

log = logging.getLogger(__name__)

WINDOW_SECONDS = 60
# A full quota frees up only as workers finish jobs: a few seconds is a fair first wait.
QUOTA_RETRY_AFTER_SECONDS = 5

# One atomic step: count ARGV[2] requests in the key's window, starting the window (its expiry) with the first.
# The TTL guard re-arms a window that somehow lost its expiry, so a key can never stay blocked for good.
FIXED_WINDOW_SCRIPT = """
local count = redis.call('INCRBY', KEYS[1], ARGV[2])
if count == tonumber(ARGV[2]) or redis.call('TTL', KEYS[1]) < 0 then
  redis.call('EXPIRE', KEYS[1], ARGV[1])
end
return {count, redis.call('TTL', KEYS[1])}
"""


class WindowCounter(Protocol):
    """Counts hits per name in fixed windows that start with a name's first hit."""

    def hit(self, name: str, window_seconds: int) -> tuple[int, int]:
        """Records one hit; returns the hits in the current window and the seconds until it ends."""

    async def hit_async(self, name: str, window_seconds: int) -> tuple[int, int]:
        """hit() for the event loop: it never blocks the loop on the counter."""


@dataclass
class _GatheredHits:
    """Hits of one name waiting to be counted in one round trip, and its outcome: (count after them, TTL)."""

    outcome: asyncio.Future
    hits: int = 0


class RedisWindowCounter:
    """Window counters in Redis, so every API process shares them."""

    def __init__(self, url: str):
        # Short timeouts: a slow Redis must not hold up every request (see check_request_rate).
        self.client = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
        self.script = self.client.register_script(FIXED_WINDOW_SCRIPT)
        # The API's authentication counts every request on the event loop: without a thread hop, and without
        # stalling other requests while Redis is slow.
        self.async_client = redis.asyncio.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
        self.async_script = self.async_client.register_script(FIXED_WINDOW_SCRIPT)
        self.gathering: dict[str, _GatheredHits] = {}  # per name: the hits the next round trip counts
        self.senders: dict[str, asyncio.Task] = {}  # per name: the task sending its round trips, while it has any

    def hit(self, name: str, window_seconds: int) -> tuple[int, int]:
        count, ttl = self.script(keys=[f"lensq:rate:{name}"], args=[window_seconds, 1])
        return int(count), max(1, int(ttl))

    async def hit_async(self, name: str, window_seconds: int) -> tuple[int, int]:
        """Hits of one name that arrive together, or while its previous round trip is on its way, are counted in
        one INCRBY: each gets the count it would have had alone (the script's count minus the hits after it), and
        a busy key costs Redis one round trip per loop turn, not one per request."""
        gathered = self.gathering.get(name)
        if gathered is None:
            gathered = self.gathering[name] = _GatheredHits(asyncio.get_running_loop().create_future())
            if name not in self.senders:
                self.senders[name] = asyncio.create_task(self._send_gathered(name, window_seconds))
        gathered.hits += 1
        mine = gathered.hits
        count, ttl = await asyncio.shield(gathered.outcome)  # a cancelled request leaves the others' count alone
        return count - gathered.hits + mine, ttl

    async def _send_gathered(self, name: str, window_seconds: int) -> None:
        """Counts the name's gathered hits, one round trip at a time, until none are left."""
        try:
            while (gathered := self.gathering.pop(name, None)) is not None:
                try:
                    count, ttl = await self.async_script(keys=[f"lensq:rate:{name}"],
                                                         args=[window_seconds, gathered.hits])
                except Exception as exc:  # each waiting request decides what a failed count means
                    gathered.outcome.set_exception(exc)
                else:
                    gathered.outcome.set_result((int(count), max(1, int(ttl))))
        finally:
            self.senders.pop(name, None)


class LocalWindowCounter:
    """Window counters in this process only: for the embedded demo, which has no Redis."""

    def __init__(self):
        self.windows: dict[str, tuple[float, int]] = {}
        self.lock = threading.Lock()

    def hit(self, name: str, window_seconds: int) -> tuple[int, int]:
        now = time.monotonic()
        with self.lock:
            start, count = self.windows.get(name, (now, 0))
            if now - start >= window_seconds:
                start, count = now, 0
            self.windows[name] = (start, count + 1)
        return count + 1, max(1, math.ceil(start + window_seconds - now))

    async def hit_async(self, name: str, window_seconds: int) -> tuple[int, int]:
        return self.hit(name, window_seconds)  # a dict under a lock: nothing to wait for


def counter_redis_url(settings: ServiceSettings) -> str | None:
    """The Redis holding the rate counters: the setting, else the broker when it is Redis, else None."""
    if settings.rate_limit_redis_url:
        return settings.rate_limit_redis_url
    broker = str(celery_app.conf.broker_url or "")
    return broker if broker.startswith(("redis://", "rediss://")) else None


def make_counter(settings: ServiceSettings) -> WindowCounter:
    """Redis counters when there is a Redis, in-process counters otherwise."""
    url = counter_redis_url(settings)
    return RedisWindowCounter(url) if url else LocalWindowCounter()


def check_request_rate(counter: WindowCounter, *, key_id: uuid.UUID, limit: int) -> None:
    """Counts one request of the key; 429 naming Authorization, with Retry-After, once the minute's limit is spent."""
    try:
        count, seconds_left = counter.hit(f"key:{key_id}", WINDOW_SECONDS)
    except redis.RedisError as exc:
        # Postgres is the truth and Redis may be flushed or down: serve unlimited rather than fail every request.
        log.warning("rate counter unavailable (%s); request not counted", exc)
        return
    _refuse_over_limit(count, seconds_left, limit)


async def check_request_rate_async(counter: WindowCounter, *, key_id: uuid.UUID, limit: int) -> None:
    """check_request_rate on the event loop."""
    try:
        count, seconds_left = await counter.hit_async(f"key:{key_id}", WINDOW_SECONDS)
    except redis.RedisError as exc:
        log.warning("rate counter unavailable (%s); request not counted", exc)
        return
    _refuse_over_limit(count, seconds_left, limit)


def _refuse_over_limit(count: int, seconds_left: int, limit: int) -> None:
    if count > limit:
        raise InputError("Authorization", f"this API key's limit of {limit} requests per minute is spent; "
                         f"retry in {seconds_left}s", 429, {"Retry-After": str(seconds_left)})


def check_job_quota(session: Session, *, tenant_id: uuid.UUID, limit: int, new_jobs: int) -> None:
    """Refuses `new_jobs` more jobs if the tenant's queued and running jobs would pass its quota.

    The check holds a per-tenant lock until the session's transaction ends, so the submission that follows it in the
    same transaction is counted by the next check: concurrent requests in any API process cannot overshoot."""
    if new_jobs > limit:
        raise InputError("jobs", f"{new_jobs} jobs in one request exceed this tenant's quota of {limit} queued or "
                         "running jobs; send fewer", 413)
    lock_tenant_jobs(session, tenant_id=tenant_id)
    active = count_active_jobs(session, tenant_id=tenant_id)
    if active + new_jobs > limit:
        raise quota_refusal(active, limit)


def quota_refusal(active: int, limit: int) -> InputError:
    """The 429 for a job that would pass the tenant's quota of `limit` while `active` jobs are queued or running."""
    return InputError("jobs", f"this tenant has {active} jobs queued or running and a quota of {limit}; retry once "
                      "some have finished", 429, {"Retry-After": str(QUOTA_RETRY_AFTER_SECONDS)})
