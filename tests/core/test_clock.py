"""Injected clocks: compressed and manual time for tests and drills."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from runbook.clock import ManualClock, ScaledClock, SystemClock


async def test_manual_clock_moves_only_when_told() -> None:
    """A ManualClock stands still until advanced or slept."""
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    c = ManualClock(t0)
    assert c.now() == t0
    c.advance(90)
    await c.sleep(30)
    assert c.now() == t0 + timedelta(minutes=2)


async def test_scaled_clock_compresses_time() -> None:
    """At speed 600, sleeping 60 clock seconds takes about 0.1 real seconds."""
    c = ScaledClock(speed=600)
    start = time.monotonic()
    before = c.now()
    await c.sleep(60)
    assert time.monotonic() - start < 1.0
    assert c.now() - before >= timedelta(seconds=59)


def test_scaled_clock_rejects_nonpositive_speed() -> None:
    """Speed must be positive."""
    with pytest.raises(ValueError, match="speed"):
        ScaledClock(speed=0)


def test_system_clock_is_aware_utc() -> None:
    """The system clock returns timezone-aware UTC."""
    assert SystemClock().now().tzinfo is not None
