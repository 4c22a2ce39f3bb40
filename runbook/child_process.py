"""CPU work in a forked child process, so it runs on another core than the event loop.

A flow run is one process: Python runs one thread at a time, so CPU work in a thread (``asyncio.to_thread``)
still takes the interpreter from the event loop, which then answers its HTTP calls late. The RCA
chart is that kind of work (matplotlib: ~0.3 s of CPU on the slowest machine of our kind); drawn in a
thread next to the ticket comment and the document artifact, it took 0.6 s and delayed both
(``runbook bench overhead``). ``in_child`` forks the process (the child has everything the parent
imported, preloaded matplotlib included; the arguments are not copied or pickled), runs the function
there and sends its result back through a pipe.

The child does only that work and ends with ``os._exit`` (``multiprocessing``'s fork start method):
it runs no ``atexit`` handler and flushes none of the parent's buffers, connections or log workers.
Where fork does not exist (Windows) or fails (memory or process limits), the work runs in a thread
as before. An exception raised in the
child is raised in the parent (or, when it cannot be pickled, a ``ChildProcessFailed`` naming it); a
child that dies without an answer raises ``ChildProcessFailed`` with its exit code; a cancelled
caller kills the child.
"""

from __future__ import annotations

import asyncio
import multiprocessing
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any, TypeVar

T = TypeVar("T")


class ChildProcessFailed(RuntimeError):
    """The child process died without an answer, or its error could not be sent back."""


def _run(conn: Connection, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
    try:
        outcome: tuple[bool, Any] = (True, fn(*args))
    except BaseException as exc:  # noqa: BLE001 - every failure goes back to the parent
        outcome = (False, exc)
    try:
        conn.send(outcome)
    except Exception as exc:  # noqa: BLE001 - the result or the error did not pickle
        what = "result" if outcome[0] else f"error ({type(outcome[1]).__name__}: {outcome[1]})"
        conn.send(
            (False, ChildProcessFailed(f"{fn.__name__}: its {what} could not be sent back: {exc}"))
        )
    finally:
        conn.close()


def _receive(conn: Connection, proc: Any) -> tuple[bool, Any]:
    try:
        return conn.recv()
    except EOFError:
        proc.join()
        return False, None
    finally:
        conn.close()


def fork_available() -> bool:
    return "fork" in multiprocessing.get_all_start_methods()


async def in_child(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` in a forked child process; its return value (which must pickle)."""
    if not fork_available() or multiprocessing.current_process().daemon:
        # a daemonic process may not have children (multiprocessing's rule)
        return await asyncio.to_thread(fn, *args)
    ctx = multiprocessing.get_context("fork")
    reader, writer = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_run, args=(writer, fn, args), daemon=True)
    try:
        proc.start()
    except OSError:  # no process to be had (memory, process limits): the work is done here
        reader.close()
        writer.close()
        return await asyncio.to_thread(fn, *args)
    writer.close()  # the child holds its own copy: when it exits, the reader sees the end
    try:
        ok, value = await asyncio.shield(asyncio.to_thread(_receive, reader, proc))
    except asyncio.CancelledError:
        proc.kill()
        raise
    await asyncio.to_thread(proc.join)
    if ok:
        return value
    if value is None:
        raise ChildProcessFailed(
            f"{fn.__name__}: the child process (pid {proc.pid}) exited with code {proc.exitcode} "
            "without an answer"
        )
    raise value
