"""Group commit: many concurrent requests, one ledger transaction.

Each request hands its alerts to ``GroupCommitter.submit`` and awaits a future. One drain task takes
everything queued (up to ``batch_max`` alerts, whole requests only), records it with ONE
``Ledger.record_alerts`` call in a writer thread, and resolves each request's future with its
outcomes. While the commits run, the next batch gathers, so under load one commit serves many
requests and an idle gateway commits at once. The ledger is synchronous, so it never runs on the
event loop.

``writers`` commits may run at once: 1 for SQLite (one writer anyway), 2 for PostgreSQL, whose
round trips would otherwise leave the gateway idle. Concurrent batches are safe in the database
(unique delivery ids, one open incident per key, locks taken in key order, deadlocks retried);
they only hold requests that were in flight together, which have no order between them anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from runbook.errors import LedgerUnavailableError
from runbook.ledger import AlertIntake, AlertOutcome, Ledger


@dataclass
class _Request:
    intakes: list[AlertIntake]
    future: asyncio.Future[list[AlertOutcome]] = field(repr=False)


class GroupCommitter:
    """Batch concurrent ``record_alerts`` calls into one transaction each.

    Args:
        ledger: the open ledger.
        batch_max: the most alerts per transaction (a bigger single request still goes alone).
        wait_s: how long to wait for more requests once the ledger is free (0: commit at once).
        writers: how many commits may run at once.
    """

    def __init__(
        self, ledger: Ledger, *, batch_max: int = 1024, wait_s: float = 0.0, writers: int = 1
    ) -> None:
        if writers < 1:
            raise ValueError(f"writers must be at least 1, not {writers}")
        self.ledger = ledger
        self.batch_max = batch_max
        self.wait_s = wait_s
        self.writers = writers
        self.commits = 0
        self._queue: list[_Request] = []
        self._ready = asyncio.Event()
        self._slots = asyncio.Semaphore(writers)
        self._running: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None
        self._executor = ThreadPoolExecutor(
            max_workers=writers, thread_name_prefix="gateway-commit"
        )

    def start(self) -> None:
        """Start the drain task on the running loop."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._drain_forever())

    async def stop(self) -> None:
        """Finish what is queued, then stop the drain task and the writer thread."""
        while self._queue or self._running:  # noqa: ASYNC110 - shutdown only: let them commit
            await asyncio.sleep(0.001)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._executor.shutdown(wait=True)

    async def submit(self, intakes: list[AlertIntake]) -> list[AlertOutcome]:
        """Record ``intakes`` in the next group commit and wait for it.

        Args:
            intakes: one request's alerts (they commit together, all or none).

        Returns:
            One outcome per intake, once committed.

        Raises:
            LedgerUnavailableError: the database could not be reached; nothing was stored.
            LedgerError: the ledger refused these alerts.
        """
        if self._task is None:
            self.start()
        future: asyncio.Future[list[AlertOutcome]] = asyncio.get_running_loop().create_future()
        self._queue.append(_Request(intakes, future))
        self._ready.set()
        return await future

    async def _drain_forever(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._ready.wait()
            await self._slots.acquire()
            if self.wait_s:
                await asyncio.sleep(self.wait_s)
            batch = self._take()
            if not self._queue:
                self._ready.clear()
            if not batch:
                self._slots.release()
                continue
            task = loop.create_task(self._commit_in_slot(batch))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _commit_in_slot(self, batch: list[_Request]) -> None:
        try:
            await self._commit(batch)
        finally:
            self._slots.release()

    def _take(self) -> list[_Request]:
        taken: list[_Request] = []
        size = 0
        while self._queue and (not taken or size + len(self._queue[0].intakes) <= self.batch_max):
            request = self._queue.pop(0)
            if request.future.cancelled():
                continue  # the client went away before we started: it got no 2xx
            taken.append(request)
            size += len(request.intakes)
        return taken

    async def _commit(self, batch: list[_Request]) -> None:
        loop = asyncio.get_running_loop()
        flat = [intake for request in batch for intake in request.intakes]
        try:
            outcomes = await loop.run_in_executor(self._executor, self.ledger.record_alerts, flat)
        except LedgerUnavailableError as error:
            for request in batch:
                _fail(request, error)
            return
        except Exception as error:  # noqa: BLE001 - one bad request must not fail its neighbours
            if len(batch) == 1:
                _fail(batch[0], error)
                return
            for request in batch:
                await self._commit([request])
            return
        self.commits += 1
        start = 0
        for request in batch:
            end = start + len(request.intakes)
            if not request.future.done():
                request.future.set_result(outcomes[start:end])
            start = end


def _fail(request: _Request, error: BaseException) -> None:
    if not request.future.done():
        request.future.set_exception(error)
