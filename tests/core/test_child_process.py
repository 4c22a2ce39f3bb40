"""CPU work in a forked child: the result comes back, so do errors; a dead child and a cancelled
caller leave nothing running."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

import runbook.child_process as child_process
from runbook.child_process import ChildProcessFailed, in_child


def _pid_and(value: int) -> tuple[int, int]:
    return os.getpid(), value * 2


def _raise(message: str) -> None:
    raise ValueError(message)


class _Unpicklable(Exception):
    def __reduce__(self):  # type: ignore[override]
        raise TypeError("no pickling here")


def _raise_unpicklable() -> None:
    raise _Unpicklable("locked")


def _die(code: int) -> None:
    os._exit(code)


def _sleep_writing_pid(path: Path) -> None:
    path.write_text(str(os.getpid()))
    time.sleep(60)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie is not running
        return f.read().split(") ")[1][0] != "Z"


def test_the_work_runs_in_another_process_and_its_result_comes_back() -> None:
    pid, doubled = asyncio.run(in_child(_pid_and, 21))
    assert doubled == 42
    assert pid != os.getpid()


def test_an_error_in_the_child_is_raised_in_the_parent() -> None:
    with pytest.raises(ValueError, match="bad chart data"):
        asyncio.run(in_child(_raise, "bad chart data"))


def test_an_error_that_cannot_be_pickled_is_named() -> None:
    with pytest.raises(ChildProcessFailed, match=r"_Unpicklable: locked.*could not be sent back"):
        asyncio.run(in_child(_raise_unpicklable))


def test_a_child_that_dies_without_answering_says_its_exit_code() -> None:
    with pytest.raises(ChildProcessFailed, match="exited with code 7 without an answer"):
        asyncio.run(in_child(_die, 7))


def test_a_cancelled_caller_kills_the_child(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"

    async def main() -> int:
        task = asyncio.ensure_future(in_child(_sleep_writing_pid, pid_file))
        for _ in range(200):
            if pid_file.exists() and pid_file.read_text():
                break
            await asyncio.sleep(0.05)
        pid = int(pid_file.read_text())
        assert _alive(pid)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return pid

    pid = asyncio.run(main())
    deadline = time.monotonic() + 10
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(pid), "the child outlived its cancelled caller"


def test_without_fork_the_work_runs_in_a_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(child_process, "fork_available", lambda: False)
    pid, doubled = asyncio.run(in_child(_pid_and, 2))
    assert (pid, doubled) == (os.getpid(), 4)


def test_a_fork_that_fails_runs_the_work_in_a_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """No process to be had (EAGAIN/ENOMEM from fork): the work still gets done, here."""
    import multiprocessing.process

    def no_fork(self: object) -> None:
        raise BlockingIOError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(multiprocessing.process.BaseProcess, "start", no_fork)
    pid, doubled = asyncio.run(in_child(_pid_and, 3))
    assert (pid, doubled) == (os.getpid(), 6)


def test_a_daemonic_process_runs_the_work_in_a_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """multiprocessing forbids a daemonic process children: the work is done in it instead."""
    import multiprocessing

    monkeypatch.setattr(multiprocessing.current_process(), "daemon", True)
    pid, doubled = asyncio.run(in_child(_pid_and, 4))
    assert (pid, doubled) == (os.getpid(), 8)
