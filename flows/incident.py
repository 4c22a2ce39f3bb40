"""The parent flow: one incident through the runbook's phases, each against its SLA deadline.

detect -> triage -> mitigate -> communicate -> rca, as linked subflows. Each phase's deadline comes from
the incident's detection time and its severity (policy), lives in the ledger (so the watcher can escalate
an incident whose worker died), and a breach escalates while the phase keeps running.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from enum import StrEnum
from typing import Any

from prefect import Flow, flow, get_run_logger
from prefect.client.orchestration import get_client
from prefect.runtime import flow_run
from pydantic import BaseModel, Field

from flows.common import send_escalation
from flows.communicate import communicate
from flows.detect import detect, notify_and_page
from flows.mitigate import mitigate
from flows.phase_runs import PhaseRuns
from flows.rca import rca
from flows.report import PhaseReport
from flows.reviews import schedule_reviews
from flows.runtime import Options, Runtime, build_runtime
from flows.triage import triage
from runbook.clients.base import shared_connections
from runbook.errors import InvalidTransition
from runbook.ledger import Ledger
from runbook.ledger.records import Deadline
from runbook.models import Incident, IncidentStatus, Phase, Severity, check_transition
from runbook.priority import configured_nice, nice_after_mitigation
from runbook.sla import breach_reason, check_overrun, escalate, on_severity_change


class SuspectedScenario(StrEnum):
    """The runbook's common scenarios, for a person declaring an incident."""

    BAD_DEPLOY = "bad-deploy"
    HIGH_ERROR_RATE = "high-error-rate"
    AUTH_FAILURE = "auth-failure"
    DB_DEGRADATION = "db-degradation"
    EDGE_TIMEOUTS = "edge-timeouts"


class Declaration(BaseModel):
    """An incident declared by a person from the Prefect UI's run form."""

    title: str = Field(min_length=3, max_length=200, description="What is wrong, in a few words.")
    service: str = Field(
        min_length=1, max_length=100, description="The affected service (web, api, auth ...)."
    )
    severity: Severity = Field(
        description="P0 critical (system down), P1 high (major degradation), P2 medium (minor impact), "
        "P3 low (monitoring alert)."
    )
    description: str = Field("", max_length=5000, description="What you see, and since when.")
    suspected_scenario: SuspectedScenario | None = Field(
        None, description="The runbook scenario you suspect, if any (triage checks it anyway)."
    )


def _run_name() -> str:
    params = flow_run.parameters
    if params.get("incident_id"):
        return f"INC-{params['incident_id']} response"
    decl = params.get("declaration") or {}
    title = decl.get("title") if isinstance(decl, dict) else getattr(decl, "title", "")
    return f"declared: {title}"[:100]


async def _rename(name: str) -> None:
    run_id = flow_run.id
    if run_id:
        async with get_client() as client:
            await client.update_flow_run(run_id, name=name)


async def _move(rt: Runtime, incident_id: int, to: IncidentStatus, reason: str) -> Incident:
    """Transition when the lifecycle allows it from where the incident is (a re-run may be past it)."""
    inc = await rt.incident(incident_id)
    try:
        check_transition(inc.status, to)
    except InvalidTransition:
        return inc
    return await asyncio.to_thread(rt.ledger.transition, incident_id, to, reason=reason)


def _deadline_met(
    ledger: Ledger, incident_id: int, phase: Phase, report: PhaseReport
) -> Deadline | None:
    """The phase's deadline as it is now (a severity that rose while the phase ran re-computed
    it), marked met when the phase ended by then; one trip to the ledger's thread."""
    current = next((d for d in ledger.deadlines(incident_id) if d.phase == phase.value), None)
    if current is not None and report.ended_at is not None and report.ended_at <= current.due_at:
        ledger.mark_deadline(incident_id, phase.value, met_at=report.ended_at)
    return current


async def run_phase(
    rt: Runtime, incident_id: int, phase: Phase, start: Callable[[], Awaitable[PhaseReport]]
) -> PhaseReport:
    """Run one phase subflow; if its deadline passes first, escalate and let it keep running."""
    inc = await rt.incident(incident_id)
    due = rt.deadline(phase, inc)
    await rt.note(
        incident_id,
        "phase_started",
        f"{phase.value} started" + (f", due {due.isoformat()}" if due else ""),
        phase=phase,
        data={"due_at": due.isoformat() if due else None},
    )
    running = asyncio.ensure_future(start())
    if due is not None:
        wait_s = max(0.0, (due - rt.now()).total_seconds())
        done, _ = await asyncio.wait({running}, timeout=wait_s)
        if not done:
            inc = await rt.incident(incident_id)
            esc = escalate(rt.policy, inc, "sla_breach", breach_reason(phase, due, rt.now()))
            await send_escalation(rt, inc, esc, phase)
            await asyncio.to_thread(
                rt.ledger.mark_deadline, incident_id, phase.value, escalated_at=rt.now()
            )
    report = await running
    current = await asyncio.to_thread(_deadline_met, rt.ledger, incident_id, phase, report)
    if current is not None and report.ended_at is not None:
        if report.ended_at > current.due_at and current.escalated_at is None:
            inc = await rt.incident(incident_id)
            reason = breach_reason(phase, current.due_at, report.ended_at)
            await send_escalation(rt, inc, escalate(rt.policy, inc, "sla_breach", reason), phase)
            await asyncio.to_thread(
                rt.ledger.mark_deadline, incident_id, phase.value, escalated_at=rt.now()
            )
        report.deadline = current.due_at
    await rt.note(
        incident_id,
        "phase_ended",
        f"{phase.value} ended after {report.duration_s or 0:.1f} s"
        + (" (past its deadline)" if report.breached else ""),
        phase=phase,
        data={
            "started_at": report.started_at.isoformat(),
            "ended_at": report.ended_at.isoformat() if report.ended_at else None,
            "due_at": report.deadline.isoformat() if report.deadline else None,
            "breached": report.breached,
        },
    )
    return report


async def _yield_cpu_after_mitigation(rt: Runtime, incident_id: int) -> None:
    """Mitigated, and alone in a process started for this run: lower the process's priority so
    that incidents still being mitigated get the machine first (``runbook.priority``)."""
    inc = await rt.incident(incident_id)
    run_id = flow_run.id
    configured, wrong = configured_nice()
    if wrong:
        get_run_logger().warning(wrong)
    increment = nice_after_mitigation(
        configured, inc.mitigated_at is not None, str(run_id) if run_id else None
    )
    if increment:
        niceness = os.nice(increment)
        await rt.note(
            incident_id,
            "priority_lowered",
            f"mitigated: the rest of the runbook runs at niceness {niceness}, after incidents "
            "still being mitigated on this machine",
            data={"nice": niceness},
        )


async def _severity_check(
    rt: Runtime, before: Severity, incident_id: int, options: Options
) -> None:
    """A severity that rose re-computes the deadlines, escalates, and adds the new level's actions."""
    inc = await rt.incident(incident_id)
    if not inc.severity.is_higher_than(before):
        return
    await asyncio.to_thread(rt.ledger.set_deadlines, incident_id, rt.deadlines(inc))
    esc, added = on_severity_change(
        rt.policy, inc.model_copy(update={"severity": before}), inc.severity
    )
    if esc is not None:
        await send_escalation(rt, inc, esc, None)
    if added:
        report = PhaseReport(incident_id=incident_id, phase=Phase.DETECT, started_at=rt.now())
        await notify_and_page(rt, inc, report)
        await rt.note(
            incident_id, "severity_actions", "; ".join(report.done) or "none", data={"added": added}
        )


@flow(name="incident-response", flow_run_name=_run_name)
async def incident_response(
    incident_id: int | None = None,
    declaration: Declaration | None = None,
    options: Options | None = None,
) -> dict[str, Any]:
    """Walk one incident through the runbook: detect, triage, mitigate, communicate, rca.

    Args:
        incident_id: an incident already in the ledger (the alert gateway launches with this).
        declaration: or declare a new one from the Prefect UI (title, service, severity ...).
        options: dry run, time compression, policy file, ledger URL and block names.

    Returns:
        A summary: incident id, final status, each phase's duration against its deadline, escalations.
    """
    options = options or Options()
    if incident_id is None and declaration is None:
        raise ValueError("give either incident_id (an incident in the ledger) or a declaration")
    rt = await build_runtime(options)
    # each phase's run is created while the step before it works (flows.phase_runs); detect's,
    # as soon as the incident is known to be open; whatever way the flow ends, a run made ahead and
    # never started is cancelled
    ahead = PhaseRuns(phases=(detect, triage, mitigate, communicate, rca))
    try:
        return await _respond(rt, ahead, incident_id, declaration, options)
    finally:
        await ahead.discard()


async def _respond(
    rt: Runtime,
    ahead: PhaseRuns,
    incident_id: int | None,
    declaration: Declaration | None,
    options: Options,
) -> dict[str, Any]:
    """The body of ``incident_response``, its phase runs made ahead by ``ahead``."""
    if incident_id is None:
        assert declaration is not None
        inc = await asyncio.to_thread(
            rt.ledger.declare_incident,
            declaration.title,
            declaration.severity,
            service=declaration.service,
            description=declaration.description,
            scenario=declaration.suspected_scenario.value
            if declaration.suspected_scenario
            else None,
        )
        incident_id = inc.id
        ahead.prepare(detect, {"incident_id": incident_id, "options": options})
        await _rename(f"INC-{incident_id} response")
    inc = await rt.incident(incident_id)
    if not inc.is_open:
        # a duplicate launch, or a re-run after the end: nothing to do, and nothing is done twice
        await rt.note(
            incident_id, "response_skipped", f"{inc.key} is {inc.status.value}; nothing to do"
        )
        return {
            "incident_id": incident_id,
            "status": inc.status.value,
            "resolved": inc.resolved_at is not None,
            "escalation_level": inc.escalation_level,
            "phases": [],
            "rca_path": None,
        }
    params = {"incident_id": incident_id, "options": options}
    ahead.prepare(detect, params)  # prepared already if it was just declared
    await asyncio.to_thread(rt.ledger.set_deadlines, incident_id, rt.deadlines(inc))
    await rt.note(
        incident_id, "response_started", f"runbook started for {inc.key} ({inc.severity.value})"
    )

    reports: list[PhaseReport] = []
    severity = inc.severity
    # one keep-alive pool for every vendor call of every phase (runbook.clients.base)
    async with shared_connections():

        async def phase(
            which: Phase, run: Flow[..., Any], then: Flow[..., Any] | None = None
        ) -> PhaseReport:
            """One phase, its run made ahead; ``then``'s run is made while it works."""
            return await run_phase(rt, incident_id, which, lambda: ahead.run(run, params, then))

        reports.append(await phase(Phase.DETECT, detect, then=triage))
        await _severity_check(rt, severity, incident_id, options)
        await _move(rt, incident_id, IncidentStatus.TRIAGING, "triage started")
        severity = (await rt.incident(incident_id)).severity
        reports.append(await phase(Phase.TRIAGE, triage, then=mitigate))
        await _severity_check(rt, severity, incident_id, options)
        await _move(rt, incident_id, IncidentStatus.MITIGATING, "mitigation started")
        reports.append(await phase(Phase.MITIGATE, mitigate, then=communicate))
        await _yield_cpu_after_mitigation(rt, incident_id)
        reports.append(await phase(Phase.COMMUNICATE, communicate, then=rca))
        reports.append(await phase(Phase.RCA, rca))

    inc = await rt.incident(incident_id)
    overrun = check_overrun(
        rt.policy, inc, inc.detected_at + (rt.now() - inc.detected_at) * rt.speed
    )
    if overrun is not None:
        await send_escalation(rt, inc, overrun, None)
    if inc.resolved_at is not None:
        await schedule_reviews(rt, incident_id)
    outcome = "resolved" if inc.resolved_at else "still open, escalated to a person"
    await rt.note(incident_id, "response_ended", f"runbook finished: {outcome}")
    return {
        "incident_id": incident_id,
        "status": inc.status.value,
        "resolved": inc.resolved_at is not None,
        "escalation_level": inc.escalation_level,
        "phases": [
            {
                "phase": r.phase.value,
                "duration_s": r.duration_s,
                "deadline": r.deadline,
                "breached": r.breached,
            }
            for r in reports
        ],
        "rca_path": reports[-1].data.get("rca_path"),
    }
