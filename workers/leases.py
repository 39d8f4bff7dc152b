"""Keeps a claimed batch's leases alive while the model runs, so only a dead worker's leases expire."""
from __future__ import annotations

import logging
import threading

from db.queries import extend_leases
from db.session import session_scope

log = logging.getLogger(__name__)


class LeaseKeeper:
    """A thread that extends one lease every third of its length, from start() until stop()."""

    def __init__(self, *, lease_token: str, lease_seconds: float):
        self.lease_token, self.lease_seconds = lease_token, lease_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew, name="lease-keeper", daemon=True)

    def _renew(self) -> None:
        while not self._stop.wait(self.lease_seconds / 3):
            try:
                with session_scope() as session:
                    extend_leases(session, lease_token=self.lease_token, lease_seconds=self.lease_seconds)
            except Exception:
                log.exception("could not extend lease %s", self.lease_token)

    def start(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
