"""Time limits of model calls: a soft limit raised inside the call, a hard one that ends a stuck process."""
from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger(__name__)

# The exit status of a worker whose model call was stuck past its hard limit; its supervisor restarts it.
STUCK_EXIT_STATUS = 70


class CallTimedOut(BaseException):
    """A model call ran past its time limit.

    A BaseException, like KeyboardInterrupt: it arrives asynchronously, and an `except Exception` inside the
    model's code must not swallow it and carry on."""


def _exit_stuck(seconds: float) -> None:
    log.critical("a model call is still running %.0fs after it started and cannot be interrupted; exiting so the "
                 "worker is restarted (its leases lapse and the sweeper re-queues the jobs)", seconds)
    logging.shutdown()
    os._exit(STUCK_EXIT_STATUS)


@contextmanager
def _soft_limit(seconds: float) -> Iterator[None]:
    """Raises CallTimedOut in the block after `seconds` (SIGALRM: the solo pool runs tasks in the main thread)."""
    armed = True

    def on_alarm(_signum, _frame) -> None:
        if armed:  # an alarm landing just as the block ends must not raise outside it
            raise CallTimedOut(f"the model call ran past its time limit of {seconds:g}s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        armed = False
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@contextmanager
def time_limit(seconds: float, *, grace: float) -> Iterator[None]:
    """CallTimedOut after `seconds`; if the block is still running `grace` later (inside C code), the process exits.

    Outside the main thread no signal can reach the block, so only the hard limit applies there."""
    watchdog = threading.Timer(seconds + grace, _exit_stuck, args=(seconds + grace,))
    watchdog.daemon = True
    watchdog.start()
    try:
        if threading.current_thread() is threading.main_thread():
            with _soft_limit(seconds):
                yield
        else:
            yield
    finally:
        watchdog.cancel()
