"""Fault injection for tests: a model call stalls when one of its jobs asks for it, only if the worker allows it.

Two locks keep it out of production. The worker honours it only with LENSQ_FAULT_INJECTION=1 (off by default),
and the marker is a params key the API never writes (it builds params from the task's known fields), so only
a job written straight into the ledger can carry it."""
from __future__ import annotations

import logging
import time
from typing import Any

from workers.config import WorkerSettings

log = logging.getLogger(__name__)

FAULT_PARAM = "lensq_fault"
STALL = "stall"


def stall_seconds(settings: WorkerSettings) -> float:
    """How long a marked call stalls in this worker: 0 unless fault injection is on."""
    return settings.fault_stall_seconds if settings.fault_injection else 0.0


def stall_if_marked(params: list[dict[str, Any]], seconds: float) -> None:
    """Sleeps `seconds` if any job of the call carries the stall marker (a model call that hangs)."""
    if seconds > 0 and any(p.get(FAULT_PARAM) == STALL for p in params):
        log.warning("fault injection: stalling this model call for %gs", seconds)
        time.sleep(seconds)
