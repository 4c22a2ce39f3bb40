"""Pieces every phase flow shares: running a step so a failure is recorded (not fatal), escalating."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import Awaitable, Mapping
from typing import Any, TypeVar

from prefect.logging import get_run_logger

from flows.report import PhaseReport
from flows.runtime import Runtime
from runbook.errors import PermanentError, RunbookError
from runbook.models import Incident, Phase
from runbook.sla import Escalation, escalate
from tasks.context import ActionContext
from tasks.slack import post_slack_message

T = TypeVar("T")


#: how long the step on a phase's longest chain runs alone before the phase's other steps start.
#: Started together, every step's Prefect task start (~3 ms of CPU each) ran before the lead's first
#: request left the process, and the whole chain waited for them: ~20 ms of triage's 0.12 s over
#: its calls (``runbook bench overhead``). The others have the lead's wait to spare.
LEAD_START_S = 0.01


async def attempt(
    rt: Runtime,
    report: PhaseReport,
    label: str,
    step: Awaitable[T],
    *,
    escalate_on_4xx: bool = True,
) -> T | None:
    """Await one step. A failure is recorded in the timeline and the report, and a permanent one
    (a vendor's 4xx: wrong token, unknown channel ...) escalates; the phase goes on either way."""
    try:
        return await step
    except RunbookError as exc:
        kind = "permanent" if isinstance(exc, PermanentError) else "transient"
        report.found.append(f"{label} failed ({kind}): {exc}")
        await rt.note(
            report.incident_id,
            "step_failed",
            f"{label} failed: {exc}",
            phase=report.phase,
            data={"system": exc.system, "status_code": exc.status_code, "kind": kind},
        )
        if isinstance(exc, PermanentError) and escalate_on_4xx:
            inc = await rt.incident(report.incident_id)
            await send_escalation(
                rt,
                inc,
                escalate(rt.policy, inc, "step_failed", f"{label} failed: {exc}"),
                report.phase,
            )
        return None


def skip(rt: Runtime, report: PhaseReport, system: str, what: str) -> None:
    """Record that a step was skipped because its system is not configured."""
    report.skipped.append(f"{what}: {rt.systems.hint(system)}")


async def note_skips(rt: Runtime, report: PhaseReport) -> None:
    for line in report.skipped:
        await rt.note(report.incident_id, "skipped", line, phase=report.phase)


async def send_escalation(
    rt: Runtime, incident: Incident, esc: Escalation, phase: Phase | None
) -> None:
    """Record an escalation and tell the next level, once per level and kind."""
    level = max(esc.level, incident.escalation_level)
    await asyncio.to_thread(rt.ledger.update_incident, incident.id, escalation_level=level)
    contact = f" ({esc.contact})" if esc.contact else ""
    message = f"INC-{incident.id} escalated to {esc.role}{contact}: {esc.reason}"
    await rt.note(incident.id, "escalation", message, phase=phase, data=esc.model_dump())
    slack = rt.systems.get("slack")
    if slack is not None:
        ctx = ActionContext(incident_id=incident.id, ledger_url=rt.ledger_url, dry_run=rt.dry_run)
        try:
            await post_slack_message(
                ctx, slack, f"escalation-{esc.kind}-{esc.level}", f":rotating_light: {message}"
            )
        except RunbookError as exc:
            get_run_logger().warning("could not send the escalation to Slack: %s", exc)


def ctx_for(rt: Runtime, incident_id: int) -> ActionContext:
    return ActionContext(incident_id=incident_id, ledger_url=rt.ledger_url, dry_run=rt.dry_run)


def describe_result(label: str, result: dict[str, Any] | None) -> str:
    if result is None:
        return f"{label}: failed"
    if result.get("already_done"):
        return f"{label}: already done earlier (not repeated)"
    return f"{label}: {result.get('status', 'done')}"


async def attempt_all(
    rt: Runtime,
    report: PhaseReport,
    steps: Mapping[str, Awaitable[Any]],
    *,
    lead: str | None = None,
    suffix: str = "",
    escalate_on_4xx: bool = True,
) -> dict[str, Any]:
    """Run ``steps`` at once, each through ``attempt`` (labelled by its name and ``suffix``), and
    return their results by name (None for a step that failed). ``lead``, the step on the phase's
    longest chain (a metrics window: a scrape, a wait, a scrape), starts ``LEAD_START_S`` ahead of
    the others so that its first call is out before their starts take the event loop."""
    runs = {
        name: attempt(rt, report, name + suffix, step, escalate_on_4xx=escalate_on_4xx)
        for name, step in steps.items()
    }
    if lead is None or lead not in runs:
        return dict(zip(runs, await asyncio.gather(*runs.values()), strict=True))
    first = runs.pop(lead)
    lead_result, rest = await lead_first(first, *runs.values())
    done = dict(zip(runs, rest, strict=True)) | {lead: lead_result}
    return {name: done[name] for name in steps}


async def lead_first(lead: Awaitable[T], *others: Awaitable[Any]) -> tuple[T, list[Any]]:
    """Await ``lead`` and ``others`` concurrently, ``lead`` started ``LEAD_START_S`` ahead (see
    there); return the lead's result and the others' in their order. With no others, no wait.

    As with ``asyncio.gather``, a step that raises does not stop the others: the lead is awaited
    to its end before the error is raised (never left running alone, nor cut off mid-call); only a
    cancellation of the caller cancels it."""
    ahead = asyncio.ensure_future(lead)
    try:
        if others:
            try:
                await asyncio.sleep(LEAD_START_S)
            except asyncio.CancelledError:
                for step in others:  # cancelled before they started: they never will
                    if inspect.iscoroutine(step):
                        step.close()
                raise
        rest = await asyncio.gather(*others)
    except asyncio.CancelledError:
        ahead.cancel()
        raise
    except Exception:
        with contextlib.suppress(Exception):
            await ahead
        raise
    return await ahead, rest
