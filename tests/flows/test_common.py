"""Running a phase's steps together: the lead step starts first, results come back by name, and a
failed step is recorded without stopping the others (``flows.common.attempt_all``)."""

from __future__ import annotations

import asyncio
import inspect
from datetime import UTC, datetime
from typing import Any

import pytest

from flows.common import attempt_all, lead_first
from flows.report import PhaseReport
from runbook.errors import SupabaseTransientError
from runbook.models import Phase


class _Runtime:
    """What ``attempt`` uses of a runtime when a step fails with ``escalate_on_4xx=False``."""

    def __init__(self) -> None:
        self.notes: list[tuple[str, str]] = []

    async def note(self, incident_id: int, kind: str, message: str, **_: Any) -> None:
        self.notes.append((kind, message))


def _report() -> PhaseReport:
    return PhaseReport(incident_id=7, phase=Phase.TRIAGE, started_at=datetime.now(UTC))


async def test_the_lead_step_sends_its_first_call_before_any_other_step_starts() -> None:
    """The lead's first call goes out before the other steps begin, although it is not the first
    step in the mapping, and every result comes back under its own name, in the mapping's order."""
    events: list[str] = []

    async def step(name: str, calls: int) -> str:
        events.append(f"{name} started")
        for k in range(calls):
            events.append(f"{name} call {k + 1} sent")
            await _yield_a_few_times()
        return name.upper()

    rt = _Runtime()
    steps = {"deployments": step("deployments", 1), "metrics": step("metrics", 2)}
    steps["commits"] = step("commits", 1)

    results = await attempt_all(rt, _report(), steps, lead="metrics")  # type: ignore[arg-type]

    assert list(results) == ["deployments", "metrics", "commits"]
    assert results == {"deployments": "DEPLOYMENTS", "metrics": "METRICS", "commits": "COMMITS"}
    assert events[:2] == ["metrics started", "metrics call 1 sent"]
    assert events.index("deployments started") > events.index("metrics call 1 sent")
    assert rt.notes == []


async def test_a_failed_step_is_none_and_noted_while_the_others_complete() -> None:
    """A step failing with a transient vendor error yields None and a ``step_failed`` note naming
    it (with the suffix); the lead and the other steps still return their results."""

    async def fails() -> str:
        raise SupabaseTransientError("supabase answered 503", status_code=503)

    async def works(value: str) -> str:
        return value

    rt = _Runtime()
    report = _report()
    steps = {"metrics": works("readings"), "auth": fails(), "rest": works("ok")}

    results = await attempt_all(
        rt,  # type: ignore[arg-type]
        report,
        steps,
        lead="metrics",
        suffix=" check",
        escalate_on_4xx=False,
    )

    assert results == {"metrics": "readings", "auth": None, "rest": "ok"}
    assert rt.notes == [("step_failed", "auth check failed: supabase answered 503")]
    assert report.found == ["auth check failed (transient): supabase answered 503"]


async def test_without_a_lead_or_with_one_step_all_run_at_once() -> None:
    """No lead (or a lead that is not among the steps, or a single step): nothing waits."""

    async def value(v: int) -> int:
        return v

    rt = _Runtime()
    assert await attempt_all(rt, _report(), {"a": value(1), "b": value(2)}) == {"a": 1, "b": 2}  # type: ignore[arg-type]
    assert await attempt_all(rt, _report(), {"a": value(3)}, lead="a") == {"a": 3}  # type: ignore[arg-type]
    assert await attempt_all(rt, _report(), {"a": value(4)}, lead="zzz") == {"a": 4}  # type: ignore[arg-type]


async def _yield_a_few_times() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


async def test_lead_first_finishes_the_lead_before_raising_another_steps_error() -> None:
    """Another step's error is raised only once the lead has ended: its call is never cut off
    midway nor left running after the caller has moved on."""
    ended: list[str] = []

    async def lead() -> str:
        await asyncio.sleep(0.05)
        ended.append("lead")
        return "commented"

    async def broken() -> None:
        raise RuntimeError("ledger unavailable")

    with pytest.raises(RuntimeError, match="ledger unavailable"):
        await lead_first(lead(), broken())
    assert ended == ["lead"]


async def test_lead_first_returns_the_lead_and_the_others_in_order() -> None:
    """The lead's result first, then the others' in the order given."""

    async def value(v: int, delay: float) -> int:
        await asyncio.sleep(delay)
        return v

    assert await lead_first(value(1, 0.02), value(2, 0.03), value(3, 0.0)) == (1, [2, 3])
    assert await lead_first(value(4, 0.0)) == (4, [])


async def test_cancelling_the_caller_cancels_the_lead() -> None:
    """A cancelled phase does not leave its lead step running on its own."""
    lead_cancelled = asyncio.Event()

    async def lead() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            lead_cancelled.set()
            raise

    caller = asyncio.ensure_future(lead_first(lead(), asyncio.sleep(10)))
    await asyncio.sleep(0.05)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    await asyncio.wait_for(lead_cancelled.wait(), timeout=5)


async def test_cancelled_before_the_others_start_leaves_no_step_half_begun() -> None:
    """Cancelled during the lead's head start: the lead is cancelled and the other steps, which never
    started, are closed (so no "coroutine was never awaited" warning), none of them begun."""
    started: list[str] = []

    async def step(name: str) -> None:
        started.append(name)
        await asyncio.sleep(10)

    other = step("other")
    caller = asyncio.ensure_future(lead_first(step("lead"), other))
    await asyncio.sleep(0)  # the caller starts the lead and waits out its head start
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert started == ["lead"]
    assert inspect.getcoroutinestate(other) == inspect.CORO_CLOSED
