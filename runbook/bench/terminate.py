"""SIGTERM unwinds a bench as Ctrl-C does, so everything it started is stopped.

A bench starts processes (a private Prefect server, its services and workers, ``runbook serve``
with its forkserver, a sandbox, a private PostgreSQL cluster) and stops them in ``finally`` blocks.
A SIGTERM (a CI timeout, ``kill``) skipped them: ``bench scale`` ended at once and left everything
running (an orphaned services process kept reading the Redis database the next storm used), and
``bench latency`` did not even end (still running 120 s after the signal, in a test) with its
server, ``runbook serve`` and its forkserver.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

T = TypeVar("T")

#: a bench's exit status when SIGTERM stopped it (the shell's 128 + the signal's number)
EXIT_TERMINATED = 128 + signal.SIGTERM


class Terminated(KeyboardInterrupt):
    """SIGTERM reached the bench: unwound like Ctrl-C, so everything it started is stopped."""


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """Within it, SIGTERM raises ``Terminated`` wherever the main thread is (as Ctrl-C raises
    ``KeyboardInterrupt``); the previous handler is put back on the way out. Outside the main
    thread (where Python delivers signals) it changes nothing."""

    def handler(signum: int, frame: object) -> None:
        raise Terminated

    if threading.current_thread() is not threading.main_thread():
        yield  # signals reach the main thread only; whoever runs us there decides
        return
    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_terminable(name: str, work: Callable[[], T]) -> T | int:
    """``work()`` under ``terminate_as_interrupt``; if SIGTERM stopped it (everything it started
    stopped by its own ``finally`` blocks by then), say so on stderr and return
    ``EXIT_TERMINATED`` instead of its result."""
    try:
        with terminate_as_interrupt():
            return work()
    except Terminated:
        print(f"bench {name}: terminated; everything it started is stopped", file=sys.stderr)
        return EXIT_TERMINATED
