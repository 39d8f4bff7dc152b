"""workers.time_limits in-process: the soft limit interrupts a call and is disarmed after it; the hard one exits."""
from __future__ import annotations

import subprocess
import sys
import time

import pytest

from workers.time_limits import STUCK_EXIT_STATUS, CallTimedOut, time_limit


def test_a_call_past_its_limit_is_interrupted_even_inside_except_exception():
    started = time.monotonic()
    with pytest.raises(CallTimedOut, match="time limit of 0.3s"):
        with time_limit(0.3, grace=30):
            try:
                time.sleep(10)
            except Exception:  # model code that swallows errors must not swallow the time limit
                pass
    assert time.monotonic() - started < 5


def test_the_limit_is_disarmed_once_the_call_ends():
    with time_limit(0.2, grace=30):
        pass
    time.sleep(0.5)  # no alarm arrives after the block


def test_a_call_stuck_past_its_grace_ends_the_process():
    # Outside the main thread no signal can interrupt the call: only the hard limit is left.
    code = ("import threading, time; from workers.time_limits import time_limit\n"
            "def stuck():\n"
            "    with time_limit(0.2, grace=0.3):\n"
            "        time.sleep(30)\n"
            "t = threading.Thread(target=stuck); t.start(); t.join()")
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == STUCK_EXIT_STATUS, result.stderr
    assert time.monotonic() - started < 20
