"""Keeps a claimed batch's leases alive while the model runs, so only a dead worker's leases expire."""
from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from db.queries import extend_leases
from db.session import session_scope

log = logging.getLogger(__name__)


@contextmanager
def keep_leases_alive(*, lease_token: str, lease_seconds: float) -> Iterator[None]:
    """Extends the lease every third of its length until the block ends."""
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(lease_seconds / 3):
            try:
                with session_scope() as session:
                    extend_leases(session, lease_token=lease_token, lease_seconds=lease_seconds)
            except Exception:
                log.exception("could not extend lease %s", lease_token)

    thread = threading.Thread(target=renew, name="lease-keeper", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
