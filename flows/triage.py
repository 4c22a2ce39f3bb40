"""Phase 2, Triage & Assess (5-15 min): metrics, recent changes, DB test, logs, blast radius, hypothesis."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

from prefect import flow

from flows.common import attempt_all, note_skips, skip
from flows.report import PhaseReport, publish
from flows.runtime import Options, Runtime, build_runtime
from runbook.clock import utcnow
from runbook.models import Incident, Phase
from runbook.playbooks.diagnosis import TriageFindings, diagnose
from runbook.thresholds import reading_values
from tasks.metrics import measure_metrics
from tasks.postgres import test_database_connection
from tasks.supabase import (
    probe_functions,
    summarize_auth_logs,
    summarize_errors,
    summarize_function_logs,
)
from tasks.tickets import recent_commits
from tasks.vercel import list_production_deployments

METRICS_WINDOW_S = 30.0
LOOKBACK_MIN = 2.0
REQUESTS_PER_USER_PER_MIN = (
    6.0  # a typical signed-in session; turns failed requests into affected users
)


def blast_radius(
    readings: dict[str, float], window_s: float, throughput_rps: float | None
) -> dict[str, Any]:
    """An estimate of affected users: failing requests per minute over requests per user per minute."""
    if throughput_rps is None or "error_rate" not in readings:
        return {"estimate": None, "basis": "no metrics"}
    failing_per_min = throughput_rps * 60 * readings["error_rate"] / 100
    users = failing_per_min / REQUESTS_PER_USER_PER_MIN
    return {
        "estimate": round(users),
        "failing_requests_per_min": round(failing_per_min, 1),
        "basis": f"{readings['error_rate']:.2f} % of {throughput_rps:.1f} req/s, {REQUESTS_PER_USER_PER_MIN:g} requests per user per minute",
    }


async def gather_evidence(rt: Runtime, inc: Incident, report: PhaseReport) -> dict[str, Any]:
    sys = rt.systems
    steps: dict[str, Any] = {}
    # logs from when the trouble began (the earliest alert's start, else a little before detection)
    alerts = await asyncio.to_thread(rt.ledger.alerts_for, inc.id)
    starts = [a.started_at for a in alerts if a.started_at is not None]
    began = min(starts) if starts else inc.detected_at - timedelta(minutes=LOOKBACK_MIN)
    # the logs are stamped by the wall clock, so the window is wall time since the trouble began;
    # the run's clock (compressed in a drill: 100x) would stretch it far before the fault, where the
    # few rows after it (the 429s of an auth failure) drown among healthy ones
    window_min = max(0.5, (utcnow() - began).total_seconds() / 60)
    if sys.get("app") is not None and sys.get("app").metrics_url:
        steps["metrics"] = measure_metrics(sys.get("app"), max(0.3, METRICS_WINDOW_S / rt.speed))
    else:
        skip(rt, report, "app", "metrics")
    if sys.get("vercel") is not None:
        steps["deployments"] = list_production_deployments(sys.get("vercel"))
    else:
        skip(rt, report, "vercel", "recent deployments")
    if sys.get("github") is not None:
        steps["commits"] = recent_commits(sys.get("github"))
    target = rt.postgres()
    if target is not None:
        steps["database"] = test_database_connection(target)
    else:
        skip(rt, report, "postgres", "database connection test")
    if sys.get("supabase") is not None:
        steps["functions"] = summarize_function_logs(sys.get("supabase"), window_min)
        steps["probes"] = probe_functions(sys.get("supabase"))
        steps["auth"] = summarize_auth_logs(sys.get("supabase"), window_min)
        steps["errors"] = summarize_errors(sys.get("supabase"), window_min)
    else:
        skip(rt, report, "supabase", "edge-function and auth logs")
    results = await attempt_all(rt, report, steps, lead="metrics", escalate_on_4xx=False)
    return {k: v for k, v in results.items() if v is not None}


def _timeouts(logs: dict[str, Any], probes: dict[str, dict[str, Any]]) -> dict[str, int]:
    """Timeouts per function: from the logs, plus one for each direct call that failed."""
    out = {k: int(v) for k, v in (logs.get("timeouts") or {}).items() if v}
    for slug, probe in probes.items():
        if not probe["ok"] and (probe["timed_out"] or (probe["status_code"] or 0) >= 500):
            out[slug] = out.get(slug, 0) + 1
    return out


def _error_types(ev: dict[str, Any]) -> dict[str, int]:
    """Errors by type: from the logs when they have any, else from the app's metrics."""
    from_logs = (ev.get("errors") or {}).get("by_type") or {}
    if from_logs:
        return {k: int(v) for k, v in from_logs.items()}
    readings = ev.get("metrics")
    return {
        k: round(v) for k, v in (readings.errors_by_type if readings else {}).items() if round(v)
    }


def findings_from(inc: Incident, ev: dict[str, Any], detected_at: datetime) -> TriageFindings:
    readings = ev.get("metrics")
    values = reading_values(readings) if readings else {}
    deps = ev.get("deployments") or {}
    live = next((d for d in deps.get("deployments", []) if d["id"] == deps.get("live")), None)
    db = ev.get("database") or {}
    fn = ev.get("functions") or {}
    auth = ev.get("auth") or {}
    return TriageFindings(
        detected_at=detected_at,
        error_rate_pct=values.get("error_rate"),
        p95_ms=values.get("p95_latency"),
        last_deploy_at=datetime.fromisoformat(live["created"]) if live else None,
        last_deploy_id=live["id"] if live else None,
        auth_ok=None
        if not auth
        else (auth.get("errors", 0) + auth.get("rate_limited", 0)) * 10
        < max(auth.get("requests", 0), 1),
        auth_errors=auth.get("errors", 0),
        auth_rate_limited=auth.get("rate_limited", 0),
        db_ok=db.get("ok") if db else None,
        db_latency_ms=db.get("latency_ms"),
        long_running_queries=db.get("long_running", 0),
        slow_queries=db.get("slow_queries", 0),
        slowest_query_s=db.get("slowest_query_s"),
        db_connection_pct=db.get("connections_pct"),
        function_timeouts=_timeouts(fn, ev.get("probes") or {}),
        function_success_pct=fn.get("success_pct"),
        error_types=_error_types(ev),
    )


@flow(name="triage", flow_run_name="INC-{incident_id} triage")
async def triage(incident_id: int, options: Options | None = None) -> PhaseReport:
    """Triage & Assess: gather metrics and recent changes, test the database, read function and auth
    logs, estimate the blast radius, and write the ranked hypothesis to the ledger as the diagnosis.

    Args:
        incident_id: the ledger's incident id.
        options: dry run, time compression, policy, ledger and block names.

    Returns:
        The phase report; ``data["diagnosis"]`` holds the ranked scenarios with their evidence.
    """
    options = options or Options()
    rt = await build_runtime(options)
    inc = await rt.incident(incident_id)
    deadline = rt.deadline(Phase.TRIAGE, inc)
    report = PhaseReport(
        incident_id=incident_id, phase=Phase.TRIAGE, started_at=rt.now(), deadline=deadline
    )

    ev = await gather_evidence(rt, inc, report)
    for name, value in ev.items():
        report.checked.append(
            f"{name}: {value if not hasattr(value, 'model_dump') else value.model_dump(mode='json')}"
        )
    findings = findings_from(inc, ev, inc.detected_at)
    readings = ev.get("metrics")
    radius = blast_radius(
        reading_values(readings) if readings else {},
        0,
        readings.throughput_rps if readings else None,
    )
    diagnosis = diagnose(
        findings,
        error_alert_pct=rt.policy.thresholds["error_rate"].alert,
        p95_alert_ms=rt.policy.thresholds["p95_latency"].alert,
    )
    top = diagnosis.top
    scenario = top.scenario if top and top.score > 0 else None
    stored = diagnosis.model_dump(mode="json") | {
        "blast_radius": radius,
        "findings": findings.model_dump(mode="json"),
    }
    await asyncio.to_thread(
        rt.ledger.update_incident, incident_id, diagnosis=stored, scenario=scenario
    )
    ranked = (
        ", ".join(f"{h.scenario} {h.score:.2f}" for h in diagnosis.hypotheses if h.score > 0)
        or "none"
    )
    message = f"hypothesis: {scenario or 'unknown'} (ranked: {ranked}); affected users ~{radius['estimate']}"
    await rt.note(
        incident_id, "diagnosis", message, phase=Phase.TRIAGE, data={"scenario": scenario}
    )
    report.found.append(message)
    if top:
        report.found += [f"evidence: {e.note}" for e in top.evidence]
    report.data["diagnosis"] = stored
    report.data["scenario"] = scenario
    report.ended_at = rt.now()
    await note_skips(rt, report)
    await publish(report)
    return report
