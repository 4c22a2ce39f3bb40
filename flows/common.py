"""Pieces every phase flow shares: running a step so a failure is recorded (not fatal), escalating."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
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
