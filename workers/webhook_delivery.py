"""The webhook deliverer: claims due outbox rows, POSTs them signed to public addresses only, retries with backoff.

It runs as a thread in each worker (like the sweeper), and stand-alone with `python -m workers.webhook_delivery`.
It imports neither torch nor the model: a receiver that hangs costs a thread, never a batch.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
import random
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta

import httpx
from sqlalchemy.exc import OperationalError

from db.models import utcnow
from db.network_addresses import ForbiddenAddress, UnresolvedHost, allowed_networks, resolve_public
from db.session import session_scope
from db.webhooks import DELIVERED, FAILED, PENDING, DueDelivery, claim_due_deliveries, next_due_at, record_attempt
from workers.config import WorkerSettings

log = logging.getLogger(__name__)
SIGNATURE_HEADER = "LensQ-Signature"
USER_AGENT = "LensQ-Webhooks/1"
# How long past its timeout a claimed attempt stays the claimer's before another deliverer may take it over.
CLAIM_MARGIN_SECONDS = 30.0
MIN_PAUSE_SECONDS = 0.05


def webhook_body(payload: dict) -> bytes:
    """The exact bytes POSTed (and signed): compact JSON with sorted keys."""
    return json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()


def signature_header(secret: str, timestamp: int, body: bytes) -> str:
    """`t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>." + body under the tenant's secret>`."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def retry_delay(attempt: int, settings: WorkerSettings) -> float:
    """Seconds before the attempt after `attempt`: doubling from the base, capped, with ±20% jitter so that
    many deliveries failing together (a receiver's outage) do not all come back at the same instant."""
    delay = min(settings.webhook_retry_max_seconds, settings.webhook_retry_base_seconds * 2 ** (attempt - 1))
    return delay * random.uniform(0.8, 1.2)


@dataclass(frozen=True)
class AttemptResult:
    """What one POST got: a status code, or an error; `permanent` when trying again cannot help."""

    started_at: datetime
    status_code: int | None = None
    error: str | None = None
    duration_ms: int = 0
    permanent: bool = False

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300

    def log_entry(self, attempt: int) -> dict:
        return {"attempt": attempt, "at": self.started_at.isoformat(), "status_code": self.status_code,
                "error": self.error, "duration_ms": self.duration_ms}


def _pinned_request(client: httpx.Client, delivery: DueDelivery, url: httpx.URL, address, timeout: float):
    """A POST to the checked address itself, so no second DNS answer can move it; Host and SNI keep the name."""
    body = webhook_body(delivery.payload)
    headers = {
        "Host": url.netloc.decode("ascii"), "Content-Type": "application/json", "User-Agent": USER_AGENT,
        "LensQ-Event": delivery.event, "LensQ-Delivery": str(delivery.id),
        SIGNATURE_HEADER: signature_header(delivery.secret, int(time.time()), body),
    }
    extensions = {"sni_hostname": url.raw_host.decode("ascii")} if url.scheme == "https" else {}
    return client.build_request("POST", url.copy_with(host=str(address)), content=body, headers=headers,
                                extensions=extensions, timeout=timeout)


def post_once(client: httpx.Client, delivery: DueDelivery, settings: WorkerSettings, allowed: list) -> AttemptResult:
    """One signed POST of the delivery; a redirect is not followed (it counts as a failed attempt)."""
    started, clock = utcnow(), time.monotonic()
    try:
        url = httpx.URL(delivery.url)
        address = resolve_public(url.raw_host.decode("ascii"), url.port or (443 if url.scheme == "https" else 80),
                                 allowed)
        request = _pinned_request(client, delivery, url, address, settings.webhook_timeout_seconds)
        # Streamed and closed unread: a receiver's answer body is never needed, however large it is.
        response = client.send(request, stream=True)
        status = response.status_code
        response.close()
    except ForbiddenAddress as exc:
        return AttemptResult(started, error=f"refused: {exc}", permanent=True)
    except (UnresolvedHost, httpx.HTTPError, httpx.InvalidURL, ValueError) as exc:
        return AttemptResult(started, error=f"{exc.__class__.__name__}: {exc}"[:500],
                             duration_ms=int((time.monotonic() - clock) * 1000))
    duration_ms = int((time.monotonic() - clock) * 1000)
    error = None if 200 <= status < 300 else f"answered HTTP {status}"
    return AttemptResult(started, status_code=status, error=error, duration_ms=duration_ms)


def finish_attempt(delivery: DueDelivery, result: AttemptResult, settings: WorkerSettings) -> str:
    """Writes the attempt to the delivery log and decides: delivered, retried later, or failed for good."""
    next_at = None
    if result.delivered:
        status = DELIVERED
    elif result.permanent or delivery.attempt >= settings.webhook_max_attempts:
        status = FAILED
    else:
        status = PENDING
        next_at = utcnow() + timedelta(seconds=retry_delay(delivery.attempt, settings))
    with session_scope() as session:
        record_attempt(session, delivery_id=delivery.id, attempt=delivery.attempt,
                       entry=result.log_entry(delivery.attempt), status=status, next_attempt_at=next_at)
    if status != DELIVERED:
        log.info("webhook %s (%s) attempt %d: %s; %s", delivery.id, delivery.event, delivery.attempt, result.error,
                 "failed for good" if status == FAILED else f"next at {next_at:%H:%M:%S}")
    return status


def deliver_due(client: httpx.Client, pool: ThreadPoolExecutor, settings: WorkerSettings) -> int:
    """One round: claims up to a batch of due deliveries and attempts each once; returns how many it claimed."""
    with session_scope() as session:
        due = claim_due_deliveries(session, limit=settings.webhook_batch_size,
                                   lease_seconds=settings.webhook_timeout_seconds + CLAIM_MARGIN_SECONDS)
    allowed = allowed_networks(settings.webhook_allow_cidrs)

    def attempt(delivery: DueDelivery) -> str:
        return finish_attempt(delivery, post_once(client, delivery, settings, allowed), settings)

    list(pool.map(attempt, due))
    return len(due)


def seconds_until_due(settings: WorkerSettings) -> float:
    """How long the deliverer may sleep: 0 if a delivery is due, else until the earliest pending retry, at most
    the poll interval (events written by other processes are found by polling)."""
    with session_scope() as session:
        due = next_due_at(session)
    if due is None:
        return settings.webhook_poll_seconds
    return min(settings.webhook_poll_seconds, max(0.0, (due - utcnow()).total_seconds()))


class WebhookDeliverer(threading.Thread):
    """A daemon thread delivering the outbox until stopped; `wake()` makes it look at once."""

    def __init__(self, settings: WorkerSettings):
        super().__init__(name="lensq-webhooks", daemon=True)
        self.settings = settings
        self.woken = threading.Event()
        self.stopped = threading.Event()

    def wake(self) -> None:
        self.woken.set()

    def stop(self) -> None:
        self.stopped.set()
        self.woken.set()

    def _round(self, client: httpx.Client, pool: ThreadPoolExecutor) -> float:
        """One round; returns how long to sleep before the next."""
        try:
            # A read first: an idle deliverer opens no claiming transaction (on SQLite every one takes the lock).
            pause = seconds_until_due(self.settings)
            if pause > 0:
                return pause
            claimed = deliver_due(client, pool, self.settings)
            if claimed >= self.settings.webhook_batch_size:
                return 0.0  # a backlog: keep going
            # Nothing claimed although something was due: another deliverer holds it; do not spin on it.
            return seconds_until_due(self.settings) if claimed else MIN_PAUSE_SECONDS
        except OperationalError as exc:  # the database is down or restarting: expected, no traceback
            log.warning("webhook delivery: database unavailable (%s)", next(iter(str(exc).splitlines()), "")[:200])
        except Exception:
            log.exception("webhook delivery round failed")
        return self.settings.webhook_poll_seconds

    def run(self) -> None:
        # trust_env=False: a proxy from the environment would do its own DNS, and the address check would mean nothing.
        with httpx.Client(trust_env=False, follow_redirects=False) as client, \
                ThreadPoolExecutor(self.settings.webhook_concurrency, thread_name_prefix="lensq-webhook") as pool:
            while not self.stopped.is_set():
                pause = self._round(client, pool)
                if pause and self.woken.wait(pause):
                    self.woken.clear()


_deliverer: WebhookDeliverer | None = None


def start_deliverer(settings: WorkerSettings) -> WebhookDeliverer | None:
    """Starts this process's deliverer thread (unless switched off by LENSQ_WEBHOOK_DELIVERY_ENABLED=0)."""
    global _deliverer
    if settings.webhook_delivery_enabled and _deliverer is None:
        _deliverer = WebhookDeliverer(settings)
        _deliverer.start()
    return _deliverer


def wake_deliverer() -> None:
    """Tells this process's deliverer that events were just committed (other processes find them by polling)."""
    if _deliverer is not None:
        _deliverer.wake()


def stop_deliverer() -> None:
    if _deliverer is not None:
        _deliverer.stop()


def main() -> None:
    """Delivers webhooks in the foreground until SIGTERM or Ctrl-C: a deliverer without a model."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    deliverer = WebhookDeliverer(WorkerSettings())
    signal.signal(signal.SIGTERM, lambda *_: deliverer.stop())
    deliverer.start()
    try:
        while deliverer.is_alive():
            deliverer.join(timeout=1)
    except KeyboardInterrupt:
        deliverer.stop()
        deliverer.join(timeout=30)


if __name__ == "__main__":
    main()
