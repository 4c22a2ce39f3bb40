"""What the machine was like when a benchmark ran: its CPUs, its load, and a speed reading.

Every bench's JSON carries ``machine`` so that figures taken on different machines (or on the same
shared machine at different times) can be compared. The speed reading is the best of three timed
runs of a fixed pure-Python loop (local variables, in a function), in millions of iterations per
second: the benchmarks here are mostly CPU-bound Python (Prefect's engine and server, the gateway),
so they move with it. On one machine of this project's kind (2 cores, 24 GiB) it read 13-24 within
the same hour, so a shared host's speed varies: read a bench's figures with its own reading.
"""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path
from typing import Any

LOOP_ITERATIONS = 1_000_000
LOOP_RUNS = 3


def python_speed(iterations: int = LOOP_ITERATIONS, runs: int = LOOP_RUNS) -> float:
    """Millions of iterations per second of a fixed pure-Python loop, best of ``runs``."""
    best = float("inf")
    for _ in range(runs):
        total = 0
        started = time.perf_counter()
        for i in range(iterations):
            total += i
        best = min(best, time.perf_counter() - started)
    return round(iterations / best / 1e6, 2)


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The first ``model name`` in /proc/cpuinfo, else what ``platform`` says."""
    try:
        for line in cpuinfo.read_text("utf-8", "replace").splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def reading() -> dict[str, Any]:
    """``cpus``, ``cpu_model``, ``load_1m`` (before the speed reading) and ``python_mips``."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return {
        "cpus": os.cpu_count(),
        "cpu_model": cpu_model(),
        "load_1m": round(load, 2) if load is not None else None,
        "python_mips": python_speed(),
    }
