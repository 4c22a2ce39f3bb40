"""SIGTERM to a bench stops everything it started (runbook.bench.terminate): `bench latency` and
`bench overhead` here (`bench scale`'s own test is in test_scale.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from runbook.bench.terminate import EXIT_TERMINATED, run_terminable

ROOT = Path(__file__).resolve().parents[2]


def _process_table() -> dict[int, tuple[int, str, str]]:
    """pid -> (parent pid, start time, command line) of every process now."""
    table = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            cmd = Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ")
        except OSError:  # gone meanwhile
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        table[int(pid)] = (int(fields[1]), fields[19], cmd)
    return table


def _descendants(root: int) -> dict[tuple[int, str], str]:
    """(pid, start time) -> command line of every process under ``root``, however deep."""
    table = _process_table()
    found: dict[tuple[int, str], str] = {}
    todo = [root]
    while todo:
        parent = todo.pop()
        for pid, (ppid, started, cmd) in table.items():
            if ppid == parent:
                found[(pid, started)] = cmd
                todo.append(pid)
    return found


def _alive(procs: dict[tuple[int, str], str], grace_s: float = 30.0) -> list[str]:
    """Those of ``procs`` still running once ``grace_s`` has passed (or as soon as none is): a
    process told to stop may take a few seconds to finish."""
    deadline = time.monotonic() + grace_s
    while True:
        table = _process_table()
        alive = [
            f"{pid} {cmd}"
            for (pid, started), cmd in procs.items()
            if table.get(pid, (0, ""))[1] == started
        ]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.5)


def _terminate_once(
    args: list[str], home: Path, ready: Callable[[dict[tuple[int, str], str]], bool]
) -> tuple[int, str, dict[tuple[int, str], str]]:
    """Start `runbook bench ARGS`, SIGTERM it once ``ready(its processes)``; its exit status, its
    stderr and the processes it had then."""
    env = dict(os.environ, RUNBOOK_HOME=str(home))
    bench = subprocess.Popen(
        [sys.executable, "-m", "runbook.cli", "bench", *args],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        procs: dict[tuple[int, str], str] = {}
        while time.monotonic() < deadline and bench.poll() is None:
            procs = _descendants(bench.pid)
            if ready(procs):
                break
            time.sleep(0.3)
        assert bench.poll() is None and ready(procs), f"the bench did not get going: {procs}"
        bench.send_signal(signal.SIGTERM)
        _, stderr = bench.communicate(timeout=120)
    finally:
        if bench.poll() is None:
            bench.kill()
            bench.wait()
    return bench.returncode, stderr, procs


@pytest.mark.timeout(300)
def test_sigterm_to_bench_latency_stops_its_server_and_runbook_serve(tmp_path) -> None:
    """Once `bench latency` runs its private Prefect server and `runbook serve` (with its
    forkserver), SIGTERM makes it exit 143 saying so, and none of those processes is left (before,
    the bench itself was still running 120 s after the signal, and all of them with it)."""

    def serving(procs: dict[tuple[int, str], str]) -> bool:
        return any(" serve --poll" in c for c in procs.values()) and any(
            "multiprocessing.forkserver" in c for c in procs.values()
        )

    code, stderr, procs = _terminate_once(["latency", "--alerts", "50"], tmp_path, serving)
    assert code == EXIT_TERMINATED, stderr[-3000:]
    assert "bench latency: terminated; everything it started is stopped" in stderr
    assert len(procs) >= 3  # the server, runbook serve, its forkserver
    assert _alive(procs) == []


@pytest.mark.timeout(300)
def test_sigterm_to_bench_overhead_stops_its_server_and_sandbox(tmp_path) -> None:
    """Once `bench overhead` runs its slowed sandbox process and its private Prefect server,
    SIGTERM makes it exit 143 saying so, and neither process is left."""

    def running(procs: dict[tuple[int, str], str]) -> bool:
        return any("serve_sandbox" in c for c in procs.values()) and len(procs) >= 2

    code, stderr, procs = _terminate_once(["overhead", "--runs", "1"], tmp_path, running)
    assert code == EXIT_TERMINATED, stderr[-3000:]
    assert "bench overhead: terminated; everything it started is stopped" in stderr
    assert _alive(procs) == []


def test_run_terminable_turns_sigterm_into_its_exit_status_and_restores_the_handler(
    capsys,
) -> None:
    """SIGTERM during the work unwinds it (its ``finally`` runs) and returns 143 with a message;
    without SIGTERM the work's result comes back; the previous handler is put back either way."""
    unwound = []

    def work() -> str:
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
            return "finished"
        finally:
            unwound.append(True)

    before = signal.getsignal(signal.SIGTERM)
    assert run_terminable("probe", work) == EXIT_TERMINATED
    assert unwound == [True]
    assert "bench probe: terminated; everything it started is stopped" in capsys.readouterr().err
    assert run_terminable("probe", lambda: "result") == "result"
    assert signal.getsignal(signal.SIGTERM) is before
