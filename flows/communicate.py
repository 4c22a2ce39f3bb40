"""Phase 5, Communicate & Document (ongoing): channel update, status page, customer email, PagerDuty,
ticket, and closing the incident."""

from __future__ import annotations

import asyncio
from typing import Any

from prefect import flow

from flows.common import attempt_all, ctx_for, describe_result, note_skips, skip
from flows.report import PhaseReport, publish
from flows.runtime import Options, Runtime, build_runtime
from runbook.models import ActionStatus, Incident, IncidentStatus, Phase
from tasks.email import send_email
from tasks.pagerduty import resolve_page
from tasks.slack import post_slack_message
from tasks.statuspage import update_status_incident
from tasks.tickets import close_ticket


def _applied(rt: Runtime, incident_id: int, kind: str) -> dict[str, Any] | None:
    """The result of an earlier action of this incident (e.g. the status page it opened)."""
    for action in rt.ledger.actions_for(incident_id):
        if action.kind == kind and action.status is ActionStatus.APPLIED:
            return action.result
    return None


async def closing_steps(
    rt: Runtime, inc: Incident, report: PhaseReport, resolved: bool
) -> dict[str, Any]:
    sys, ctx = rt.systems, ctx_for(rt, inc.id)
    steps: dict[str, Any] = {}
    state = "resolved" if resolved else "still open"
    summary = f"INC-{inc.id} {inc.title}: {state}."
    if sys.get("slack") is not None:
        steps["channel update"] = post_slack_message(
            ctx, sys.get("slack"), f"communicate-{state}", summary
        )
    else:
        skip(rt, report, "slack", "channel update")
    status_incident = await asyncio.to_thread(_applied, rt, inc.id, "open_status_incident")
    if status_incident and sys.get("statuspage") is not None:
        status, component = ("resolved", "operational") if resolved else ("monitoring", None)
        body = (
            "This incident has been resolved."
            if resolved
            else "A fix is in place and we are monitoring."
        )
        steps["status page"] = update_status_incident(
            ctx, sys.get("statuspage"), status_incident["id"], status, body, inc.service, component
        )
    routing = rt.policy.routing
    if inc.severity in routing.customer_email:
        if not routing.customer_email_to:
            report.skipped.append(
                "customer email: the policy names no recipients (routing.customer_email_to)"
            )
        elif sys.get("email") is None:
            skip(rt, report, "email", "customer email")
        else:
            subject = f"[{'Resolved' if resolved else 'Update'}] {inc.title}"
            text = (
                f"{inc.title}\n\nThis incident has been resolved. We apologise for the disruption."
                if resolved
                else f"{inc.title}\n\nWe have applied a fix and are monitoring the service."
            )
            steps["customer email"] = send_email(
                ctx,
                sys.get("email"),
                f"customer-{state.replace(' ', '-')}",
                routing.email_sender,
                routing.customer_email_to,
                subject,
                text,
            )
    if resolved:
        if (
            await asyncio.to_thread(_applied, rt, inc.id, "page_oncall")
            and sys.get("pagerduty") is not None
        ):
            steps["resolve page"] = resolve_page(ctx, sys.get("pagerduty"))
        ticket = await asyncio.to_thread(_applied, rt, inc.id, "create_ticket")
        if ticket and sys.tickets is not None:
            steps["close ticket"] = close_ticket(
                ctx, sys.tickets, ticket["key"], f"Resolved. {summary}"
            )
    return await attempt_all(rt, report, steps)


@flow(name="communicate", flow_run_name="INC-{incident_id} communicate")
async def communicate(incident_id: int, options: Options | None = None) -> PhaseReport:
    """Communicate & Document: update the incident channel and the status page, resolve the page, close
    the ticket, and close a resolved incident in the ledger.

    Args:
        incident_id: the ledger's incident id.
        options: dry run, time compression, policy, ledger and block names.
    """
    options = options or Options()
    rt = await build_runtime(options)
    inc = await rt.incident(incident_id)
    report = PhaseReport(incident_id=incident_id, phase=Phase.COMMUNICATE, started_at=rt.now())
    resolved = inc.status is IncidentStatus.RESOLVED
    results = await closing_steps(rt, inc, report, resolved)
    for name, result in results.items():
        report.done.append(describe_result(name, result))
    if resolved and not rt.dry_run:
        await asyncio.to_thread(
            rt.ledger.transition,
            incident_id,
            IncidentStatus.CLOSED,
            reason="communicated and closed",
        )
        report.done.append("incident closed")
    report.data["resolved"] = resolved
    report.ended_at = rt.now()
    await note_skips(rt, report)
    await publish(report)
    return report
