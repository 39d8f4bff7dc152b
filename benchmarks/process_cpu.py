"""CPU time that groups of processes spend during a measured window, read from /proc (Linux).

The end-to-end benchmark uses it to say where a job's CPU goes: the API, the worker, Postgres, Redis and the
client share the machine's cores, so a service's jobs/s is bound by their sum as much as by the model.
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")
PROC = Path("/proc")


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process, all its threads (0 if it has exited)."""
    try:
        stat = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()  # after the command name, which may hold spaces or ")"
    return (int(fields[11]) + int(fields[12])) / TICKS_PER_SECOND  # utime, stime: fields 14 and 15 of stat


def pids_named(name: str) -> list[int]:
    """Every running process whose command name is `name` (e.g. all of Postgres's backends)."""
    pids = []
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == name:
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


class CpuMeter:
    """CPU seconds per named group; each group is a function listing its pids now (None: this process)."""

    def __init__(self, groups: dict[str, Callable[[], list[int]] | None]):
        self.groups = groups

    def snapshot(self) -> dict[str, dict[int, float]]:
        return {name: ({0: time.process_time()} if pids is None else {pid: process_cpu_seconds(pid) for pid in pids()})
                for name, pids in self.groups.items()}

    def used_since(self, before: dict[str, dict[int, float]]) -> dict[str, float]:
        """CPU seconds each group used since `before`; a process started since then counts from zero."""
        after = self.snapshot()
        return {name: sum(seconds - before[name].get(pid, 0.0) for pid, seconds in after[name].items())
                for name in self.groups}


def service_meter(processes: list) -> CpuMeter:
    """A meter for one benchmark stack: its API (the first process), its workers (the rest), the machine's
    Postgres and Redis (shared with any other stack, idle meanwhile) and this process (the client)."""
    api, workers = processes[0], processes[1:]
    return CpuMeter({"api": lambda: [api.pid], "worker": lambda: [w.pid for w in workers],
                     "postgres": lambda: pids_named("postgres"), "redis": lambda: pids_named("redis-server"),
                     "client": None})
