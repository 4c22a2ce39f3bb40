"""Injected time: the ledger, the gateway and the sandbox take a Clock, so tests move time by hand.

A ``ManualClock`` only moves when told to. Drills compress time differently: a run's ``speed``
divides its deadlines and waits (``flows.runtime.compress``), and every stamp stays real time, so
stamps written by different runs and processes always agree.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Protocol


def utcnow() -> datetime:
    """Timezone-aware now in UTC."""
    return datetime.now(UTC)


class Clock(Protocol):
    def now(self) -> datetime: ...

    async def sleep(self, seconds: float) -> None:
        """Sleep ``seconds`` of clock time."""
        ...


class SystemClock:
    """Real time."""

    def now(self) -> datetime:
        return utcnow()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


class ManualClock:
    """A clock that moves only when ``advance`` is called (or ``sleep``, which advances it)."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or utcnow()

    def now(self) -> datetime:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += timedelta(seconds=seconds)

    async def sleep(self, seconds: float) -> None:
        self.advance(seconds)
        await asyncio.sleep(0)
