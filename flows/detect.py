"""Phase 1, Detect & Alert (0-5 min): confirm, assess severity, ticket, notify, page, war room."""

from __future__ import annotations

import asyncio
from typing import Any

from prefect import flow

from flows.common import attempt_all, ctx_for, describe_result, note_skips, skip
from flows.report import PhaseReport, publish
from flows.runtime import Options, Runtime, build_runtime
from runbook.models import Incident, Phase
from runbook.playbooks.severity import Assessment, HealthFindings, assess
from runbook.policy import SeverityAction
from runbook.thresholds import evaluate
from tasks.health import (
    check_app_health,
    check_supabase_auth,
    check_supabase_rest,
    check_supabase_services,
)
from tasks.metrics import measure_metrics
from tasks.pagerduty import page_oncall
from tasks.slack import open_war_room, post_slack_message
from tasks.statuspage import open_status_incident
from tasks.teams import post_teams_card
from tasks.tickets import create_ticket

CONFIRM_WINDOW_S = 10.0


async def confirm(
    rt: Runtime, inc: Incident, report: PhaseReport
) -> tuple[HealthFindings, list[Any]]:
    """Run the health checks and a short metrics window concurrently."""
    app, supa = rt.systems.get("app"), rt.systems.get("supabase")
    steps: dict[str, Any] = {}
    if app is not None:
        steps["app"] = check_app_health(app)
        if app.metrics_url:
            steps["metrics"] = measure_metrics(app, max(0.2, CONFIRM_WINDOW_S / rt.speed))
    else:
        skip(rt, report, "app", "app health check")
    if supa is not None:
        steps["rest"] = check_supabase_rest(supa)
        steps["auth"] = check_supabase_auth(supa)
        steps["services"] = check_supabase_services(supa)
    else:
        skip(rt, report, "supabase", "Supabase health checks")
    results = await attempt_all(
        rt, report, steps, lead="metrics", suffix=" check", escalate_on_4xx=False
    )
    health = HealthFindings(
        app_ok=(results.get("app") or {}).get("ok"),
        app_status=(results.get("app") or {}).get("status_code"),
        rest_ok=(results.get("rest") or {}).get("ok"),
        auth_ok=(results.get("auth") or {}).get("ok"),
        unhealthy_services=(results.get("services") or {}).get("unhealthy", []),
    )
    for name in ("app", "rest", "auth", "services"):
        found = results.get(name)
        if found is not None:
            report.checked.append(f"{name}: {'ok' if found['ok'] else 'FAILING'} {found}")
    readings = results.get("metrics")
    findings = evaluate(rt.policy, readings) if readings is not None else []
    for f in findings:
        report.checked.append(f"{f.metric} = {f.value:.3g} ({f.level})")
    return health, findings


async def assess_severity(
    rt: Runtime, inc: Incident, health: HealthFindings, findings: list[Any]
) -> Assessment:
    alerts = await asyncio.to_thread(rt.ledger.alerts_for, inc.id)
    text = " ".join([inc.title, inc.description, *(a.summary for a in alerts)])
    labels: dict[str, str] = {}
    for a in alerts:
        labels.update(a.labels)
    return assess(rt.policy, health, findings, text=text, labels=labels, hint=inc.severity)


@flow(name="detect", flow_run_name="INC-{incident_id} detect", log_prints=False)
async def detect(incident_id: int, options: Options | None = None) -> PhaseReport:
    """Detect & Alert: confirm the incident, assess severity, ticket, notify, page, war room, status page.

    Args:
        incident_id: the ledger's incident id.
        options: dry run, time compression, policy, ledger and block names.

    Returns:
        The phase report (also published as the ``inc-<id>-detect`` artifact).
    """
    options = options or Options()
    rt = await build_runtime(options)
    inc = await rt.incident(incident_id)
    deadline = rt.deadline(Phase.DETECT, inc)
    report = PhaseReport(
        incident_id=incident_id, phase=Phase.DETECT, started_at=rt.now(), deadline=deadline
    )

    health, findings = await confirm(rt, inc, report)
    assessment = await assess_severity(rt, inc, health, findings)
    confirmed = bool(assessment.categories)
    report.found.append(
        "confirmed: "
        + ("; ".join(assessment.reasons) if confirmed else "no check failed; the alert stands")
    )
    if assessment.severity != inc.severity:
        inc = await asyncio.to_thread(
            rt.ledger.update_incident, incident_id, severity=assessment.severity
        )
    report.found.append(f"severity {inc.severity.value}")
    await rt.note(
        incident_id,
        "assessment",
        f"severity {inc.severity.value}: " + "; ".join(assessment.reasons),
        phase=Phase.DETECT,
        data=assessment.model_dump(mode="json"),
    )
    report.data["assessment"] = assessment.model_dump(mode="json")
    report.data["confirmed"] = confirmed

    await notify_and_page(rt, inc, report)
    await asyncio.to_thread(rt.ledger.update_incident, incident_id, acknowledged_at=rt.now())
    report.ended_at = rt.now()
    await note_skips(rt, report)
    await publish(report)
    return report


async def notify_and_page(rt: Runtime, inc: Incident, report: PhaseReport) -> None:
    """Ticket, chat notices, page, war room and status page, as the severity requires, concurrently."""
    pol, sev, ctx = rt.policy, inc.severity, ctx_for(rt, inc.id)
    sys = rt.systems
    summary = f"INC-{inc.id} [{sev.value}] {inc.title}"
    body = f"{summary}\nService: {inc.service or '-'}\n{inc.description}".strip()
    steps: dict[str, Any] = {}
    tracker = sys.tickets
    if tracker is not None:
        steps["ticket"] = create_ticket(ctx, tracker, summary, body, ["incident", sev.value])
    else:
        skip(rt, report, "github", "incident ticket")
    if pol.requires(sev, SeverityAction.NOTIFY_SLACK) or sev in pol.routing.slack:
        if sys.get("slack") is not None:
            steps["slack"] = post_slack_message(
                ctx, sys.get("slack"), "detected", f":red_circle: {body}"
            )
        else:
            skip(rt, report, "slack", "Slack notice")
    if sys.get("teams") is not None:
        steps["teams"] = post_teams_card(
            ctx,
            sys.get("teams"),
            "detected",
            summary,
            {"Severity": sev.value, "Service": inc.service or "-"},
            inc.description,
        )
    if pol.pages(sev):
        if sys.get("pagerduty") is not None:
            steps["page"] = page_oncall(ctx, sys.get("pagerduty"), summary, sev, inc.service)
        else:
            skip(rt, report, "pagerduty", "page on-call")
    if pol.requires(sev, SeverityAction.WAR_ROOM):
        if sys.get("slack") is not None:
            steps["war_room"] = open_war_room(ctx, sys.get("slack"), inc.title)
        else:
            skip(rt, report, "slack", "war room")
    if sev in pol.routing.status_page:
        if sys.get("statuspage") is not None:
            status = "major_outage" if sev.rank == 0 else "partial_outage"
            steps["status_page"] = open_status_incident(
                ctx,
                sys.get("statuspage"),
                inc.title,
                inc.service,
                "We are investigating this issue.",
                status,
            )
        else:
            skip(rt, report, "statuspage", "status page incident")
    for name, result in (await attempt_all(rt, report, steps)).items():
        report.done.append(describe_result(name, result))
        report.data[name] = result
    ticket = report.data.get("ticket")
    if ticket and ticket.get("ref"):
        await asyncio.to_thread(rt.ledger.update_incident, inc.id, ticket_ref=ticket["ref"])
