"""Injected clocks: real and manual time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from runbook.clock import ManualClock, SystemClock


async def test_manual_clock_moves_only_when_told() -> None:
    """A ManualClock stands still until advanced or slept."""
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    c = ManualClock(t0)
    assert c.now() == t0
    c.advance(90)
    await c.sleep(30)
    assert c.now() == t0 + timedelta(minutes=2)


def test_system_clock_is_aware_utc() -> None:
    """The system clock returns timezone-aware UTC."""
    assert SystemClock().now().tzinfo is not None
