"""``runbook worker``: a Prefect process worker whose flow runs are forked from a preloaded server.

It starts two processes and supervises them:

1. ``python -m flows.forkserver --socket S``, which imports prefect and the flows once and forks a
   child per flow run (``flows/forkserver.py``);
2. ``prefect worker start --pool P --type process ...`` with ``RUNBOOK_FORKSERVER=S`` in its
   environment and this interpreter's ``bin`` first on its ``PATH``.

A deployment whose job variable ``command`` is ``FORKRUN_COMMAND`` (``python -m runbook.forkrun``)
then starts each run as that small client instead of a new interpreter importing everything (see
``runbook/forkrun.py``); a deployment without it runs as Prefect runs it, so one pool can hold both.
SIGTERM or SIGINT goes to the worker (Prefect's worker then stops polling and ends its runs); when it
has exited the fork server is stopped. If the fork server dies, the worker keeps going and its runs
fall back to ``python -m prefect.engine``.

Prefect's worker exits when the server answers one of its reads with an error while it submits a run
(a 500 from an overloaded server: PrefectHQ/prefect#16977; only 429 is retried in 3.9), taking the
runs it started with it. Left alone, the pool then has one worker fewer for good. So a worker that
exits on its own with a non-zero code is started again after ``RESTART_DELAY_S``, at most
``RESTART_LIMIT`` times within ``RESTART_WINDOW_S``; past that it gives up with the worker's code.
The runs the worker had started end with it (Prefect may still show them Running): re-running an
incident's flow finds its actions done in the ledger and does not repeat them.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from runbook.forkrun import ENV_SOCKET

#: the job variable ``command`` that makes a process worker's run a forkrun client
FORKRUN_COMMAND = "python -m runbook.forkrun"
READY_TIMEOUT_S = 120.0
RESTART_DELAY_S = 2.0
RESTART_LIMIT = 5
RESTART_WINDOW_S = 600.0


def wait_ready(
    path: str, server: subprocess.Popen[bytes], timeout_s: float = READY_TIMEOUT_S
) -> None:
    """Return once the fork server accepts connections on ``path``.

    Raises:
        RuntimeError: the server exited, or did not listen within ``timeout_s``.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the fork server exited with {server.returncode} before listening")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            with contextlib.suppress(OSError):
                probe.connect(path)
                return  # the server drops a connection that sends no request
        time.sleep(0.1)
    raise RuntimeError(f"the fork server did not listen on {path} within {timeout_s:.0f} s")


def restart_allowed(restarts: list[float], now: float) -> bool:
    """Record a restart at ``now`` in ``restarts`` (monotonic times, pruned to the window) and say
    whether it stays within ``RESTART_LIMIT`` restarts per ``RESTART_WINDOW_S``."""
    restarts[:] = [t for t in restarts if now - t < RESTART_WINDOW_S]
    if len(restarts) >= RESTART_LIMIT:
        return False
    restarts.append(now)
    return True


def worker_command(pool: str, limit: int | None, extra: Sequence[str]) -> list[str]:
    """``prefect worker start`` on ``pool``, run as ``python -m flows.prefect_cli`` (Prefect's CLI
    with its API clients sharing one TLS context: ``flows/prefect_cli.py``)."""
    command = [sys.executable, "-m", "flows.prefect_cli", "worker", "start", "--pool", pool]
    command += ["--type", "process"]
    if limit is not None:
        command += ["--limit", str(limit)]
    return command + list(extra)


def worker_env(socket_path: str, base: dict[str, str] | None = None) -> dict[str, str]:
    """The worker's environment: the fork server's socket, and this interpreter first on PATH (so
    ``python -m runbook.forkrun`` is this installation's Python)."""
    env = dict(os.environ if base is None else base)
    env[ENV_SOCKET] = socket_path
    env["PATH"] = os.pathsep.join(
        p for p in (str(Path(sys.executable).parent), env.get("PATH", "")) if p
    )
    return env


def main(pool: str, limit: int | None = None, extra: Sequence[str] = ()) -> int:
    """Run the fork server and the worker until the worker exits; the worker's exit code.

    Raises:
        RuntimeError: the fork server could not start (its own output says why).
    """
    folder = tempfile.mkdtemp(prefix="runbook-forkserver-")  # mode 0700: only this user
    path = os.path.join(folder, "sock")
    server = subprocess.Popen(  # noqa: S603 - this interpreter, our module
        [sys.executable, "-m", "flows.forkserver", "--socket", path], stdin=subprocess.DEVNULL
    )
    worker: subprocess.Popen[bytes] | None = None
    stop_signal: list[int] = []
    told_server_gone = False

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stop_signal.append(signum)
        target = worker if worker is not None and worker.poll() is None else server
        with contextlib.suppress(ProcessLookupError):
            target.send_signal(signum)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        try:
            wait_ready(path, server)
        except RuntimeError:
            if stop_signal:  # stopped while it started: not an error
                return 128 + stop_signal[0]
            raise
        if stop_signal:
            return 128 + stop_signal[0]
        restarts: list[float] = []
        worker = subprocess.Popen(  # noqa: S603 - our own interpreter's prefect
            worker_command(pool, limit, extra), env=worker_env(path), stdin=subprocess.DEVNULL
        )
        while True:
            code = worker.poll()
            if code is not None:
                if code == 0 or stop_signal or not restart_allowed(restarts, time.monotonic()):
                    if code != 0 and not stop_signal:
                        print(
                            f"runbook worker: prefect worker exited ({code}) "
                            f"{RESTART_LIMIT + 1} times within {RESTART_WINDOW_S:.0f} s; "
                            "giving up",
                            file=sys.stderr,
                            flush=True,
                        )
                    return code
                print(
                    f"runbook worker: prefect worker exited ({code}); starting it again in "
                    f"{RESTART_DELAY_S:g} s (restart {len(restarts)} of at most {RESTART_LIMIT} "
                    f"within {RESTART_WINDOW_S:.0f} s)",
                    file=sys.stderr,
                    flush=True,
                )
                time.sleep(RESTART_DELAY_S)
                if stop_signal:
                    return code
                worker = subprocess.Popen(  # noqa: S603 - our own interpreter's prefect
                    worker_command(pool, limit, extra), env=worker_env(path),
                    stdin=subprocess.DEVNULL,
                )  # fmt: skip
                continue
            if server.poll() is not None and not stop_signal and not told_server_gone:
                print(
                    f"runbook worker: the fork server exited ({server.returncode}); runs now start "
                    "as python -m prefect.engine",
                    file=sys.stderr,
                    flush=True,
                )
                told_server_gone = True
            time.sleep(0.2)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if worker is not None and worker.poll() is None:
            worker.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                worker.wait(60)
        if server.poll() is None:
            server.terminate()
            try:
                server.wait(60)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
        with contextlib.suppress(OSError):
            os.unlink(path)
        with contextlib.suppress(OSError):
            os.rmdir(folder)
