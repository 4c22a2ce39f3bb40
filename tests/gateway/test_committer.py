"""The group commit: batches across requests, at most ``writers`` commits at once, errors per batch."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from runbook.errors import LedgerUnavailableError
from runbook.gateway.committer import GroupCommitter
from runbook.ledger import AlertIntake, AlertOutcome
from tests.ledger.helpers import make_alert


class SlowLedger:
    """Records batches after a pause, counting how many run at once; fails batches holding 'bad'."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running = 0
        self.most = 0
        self.batches: list[int] = []

    def record_alerts(self, items: list[AlertIntake]) -> list[AlertOutcome]:
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
        time.sleep(0.05)
        with self.lock:
            self.running -= 1
            self.batches.append(len(items))
        if any(i.alert.delivery_id == "bad" for i in items):
            raise LedgerUnavailableError("down")
        return [AlertOutcome(alert_id=n) for n, _ in enumerate(items)]


async def _storm(committer: GroupCommitter, n: int, bad: bool = False) -> list[Any]:
    async def one(i: int) -> Any:
        delivery = "bad" if bad and i == 0 else f"d{i}"
        try:
            return await committer.submit([AlertIntake(alert=make_alert(delivery, "k"))])
        except LedgerUnavailableError as error:
            return error

    results = await asyncio.gather(*(one(i) for i in range(n)))
    await committer.stop()
    return list(results)


@pytest.mark.parametrize("writers", [1, 2])
async def test_commits_run_at_most_writers_at_once_and_batch_requests(writers: int) -> None:
    """60 concurrent requests commit in fewer batches than requests, with at most ``writers``
    (and, with 2, indeed 2) commits running at once; every request gets its own outcome."""
    ledger = SlowLedger()
    committer = GroupCommitter(ledger, batch_max=8, writers=writers)  # type: ignore[arg-type]
    results = await _storm(committer, 60)
    assert all(isinstance(r, list) and len(r) == 1 for r in results)
    assert sum(ledger.batches) == 60 and len(ledger.batches) < 60
    assert ledger.most == writers


async def test_a_failed_batch_fails_only_its_requests() -> None:
    """When the ledger is down for one batch, its requests get the error and the others commit."""
    ledger = SlowLedger()
    committer = GroupCommitter(ledger, batch_max=4, writers=2)  # type: ignore[arg-type]
    results = await _storm(committer, 20, bad=True)
    failed = [r for r in results if isinstance(r, LedgerUnavailableError)]
    assert 1 <= len(failed) <= 4 and len(results) - len(failed) >= 16


def test_writers_must_be_positive() -> None:
    """Zero writers is refused with the reason."""
    with pytest.raises(ValueError, match="at least 1"):
        GroupCommitter(SlowLedger(), writers=0)  # type: ignore[arg-type]
