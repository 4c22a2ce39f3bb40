"""The RCA document: the runbook's template filled from the ledger (pure: no I/O but the template).

What the automation knows (timeline, response times, hypothesis and evidence, actions, affected-user
estimate, prevention items) is filled in; what only a person can write is marked as such, never
invented; what should be known but is not recorded is rendered ``_missing: <what>_``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, NamedTuple

from jinja2 import Environment, PackageLoader, StrictUndefined
from pydantic import BaseModel

from runbook.models import (
    Action,
    ActionItem,
    ActionStatus,
    Diagnosis,
    Hypothesis,
    Incident,
    Phase,
    TimelineEvent,
)
from runbook.policy import Policy, format_duration
from runbook.timings import PhaseTiming, Timings

PERSON = "_To be written by the responders._"
# actions that tell people about the incident; the Resolution lists the others (what changed things)
COMMUNICATION = frozenset(
    {
        "post_message",
        "send_email",
        "open_war_room",
        "page_oncall",
        "resolve_page",
        "create_ticket",
        "close_ticket",
        "comment_ticket",
        "open_status_incident",
        "update_status_incident",
    }
)
CHART_ALT = "Phases against their SLA, and the triggering metric"

_env = Environment(
    loader=PackageLoader("runbook", "templates"),
    undefined=StrictUndefined,
    autoescape=False,  # noqa: S701 - markdown for people, not HTML
    trim_blocks=False,
    lstrip_blocks=False,
    keep_trailing_newline=True,
)
_env.filters["missing"] = lambda value, what: value if value else f"_missing: {what}_"


def missing(what: str) -> str:
    """How the RCA marks data it should have but the ledger does not hold."""
    return f"_missing: {what}_"


def utc(at: datetime) -> datetime:
    """Aware UTC (a naive time from the ledger is UTC)."""
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def seconds_text(seconds: float | None) -> str | None:
    """``42.0 s`` under a minute, else the policy's notation (``1h30m``); None stays None."""
    if seconds is None:
        return None
    if abs(seconds) < 60:
        return f"{seconds:.1f} s"
    return format_duration(timedelta(seconds=int(seconds)))


# --- timeline ----------------------------------------------------------------------------------


class TimelineLine(BaseModel):
    """One line of the RCA's timeline: a ledger timeline event or an action record."""

    at: datetime
    source: Literal["event", "action"]
    ref: int | None = None
    text: str


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def timeline_lines(
    timeline: Sequence[TimelineEvent], actions: Sequence[Action]
) -> list[TimelineLine]:
    """Every timeline event and every action, in time order (events before actions at the same
    instant), each saying who or what did it."""
    lines: list[tuple[datetime, int, int, TimelineLine]] = []
    for i, e in enumerate(timeline):
        phase = f" ({e.phase.value})" if e.phase else ""
        text = f"{e.kind}{phase}: {_one_line(e.message)} [by {e.actor}]"
        at = utc(e.at)
        lines.append((at, 0, i, TimelineLine(at=at, source="event", ref=e.id, text=text)))
    for i, a in enumerate(actions):
        when = a.created_at or a.updated_at
        at = utc(when) if when else datetime.max.replace(tzinfo=UTC)
        target = f" on {a.target}" if a.target else ""
        text = f"action {a.kind}{target}: {a.status.value} [by {a.actor}]"
        lines.append((at, 1, i, TimelineLine(at=at, source="action", ref=a.id, text=text)))
    return [line for *_, line in sorted(lines, key=lambda t: t[:3])]


# --- response times ----------------------------------------------------------------------------


class ResponseRow(BaseModel):
    """One row of the response-times table: what took how long, against which target."""

    measure: str
    took: str
    target: str
    verdict: str


def _verdict(took: float | None, target: float | None, what: str) -> str:
    if took is None:
        return missing(what)
    if target is None:
        return "no target"
    return "met" if took <= target else "**missed**"


def phases_in_run_order(timings: Timings) -> list[PhaseTiming]:
    """The phases as they ran (by start; phases that never started last, in runbook order)."""
    far = datetime.max.replace(tzinfo=UTC)
    return sorted(timings.phases, key=lambda p: utc(p.started_at) if p.started_at else far)


def _phase_verdict(sla_s: float | None, breached: bool | None) -> str:
    if sla_s is None:
        return "no deadline"
    if breached is None:
        return missing("phase end")
    return "**missed**" if breached else "met"


def response_rows(
    timings: Timings, policy: Policy, severity: Any, speed: float = 1.0
) -> list[ResponseRow]:
    """TTA, TTM and TTR against the policy's response time, mitigation deadline and resolution
    estimate (compressed by a drill's ``speed``), then each phase against its deadline."""
    sev = policy.severities[severity]
    mitigate_due = next((p.sla_s for p in timings.phases if p.phase.value == "mitigate"), None)
    targets: list[tuple[str, float | None, float | None, str, str]] = [
        (
            "Time to acknowledge",
            timings.tta_s,
            sev.response_time.total_seconds() / speed,
            "response time",
            "acknowledgement time",
        ),
        ("Time to mitigate", timings.ttm_s, mitigate_due, "mitigate deadline", "mitigation time"),
        (
            "Time to resolve",
            timings.ttr_s,
            sev.estimated_resolution.total_seconds() / speed,
            "estimated resolution",
            "resolution time (still open)",
        ),
    ]
    rows = [
        ResponseRow(
            measure=name,
            took=seconds_text(took) or missing(what),
            target=f"{seconds_text(target)} ({label})" if target is not None else missing(label),
            verdict=_verdict(took, target, what),
        )
        for name, took, target, label, what in targets
    ]
    for p in phases_in_run_order(timings):
        start = seconds_text(
            (utc(p.started_at) - utc(timings.detected_at)).total_seconds() if p.started_at else None
        )
        rows.append(
            ResponseRow(
                measure=f"Phase {p.phase.value}"
                + (f" (started +{start})" if start else f" ({missing('start')})"),
                took=seconds_text(p.duration_s) or missing("phase end"),
                target=f"done {seconds_text(p.sla_s)} after detection"
                if p.sla_s is not None
                else "no deadline",
                verdict=_phase_verdict(p.sla_s, p.breached)
                if p.ended_at or p.phase is not Phase.RCA
                else "in progress (this document is part of it)",
            )
        )
    return rows


# --- prevention items --------------------------------------------------------------------------


class PreventionItem(NamedTuple):
    """A prevention action item proposed by the RCA."""

    title: str
    owner: str
    due: datetime


def top_hypothesis(incident: Incident) -> Hypothesis | None:
    """The diagnosis's best-scoring scenario, or None when triage formed no hypothesis."""
    diag = incident.diagnosis or {}
    top = Diagnosis.model_validate({"hypotheses": diag.get("hypotheses") or []}).top
    return top if top is not None and top.score > 0 else None


def _deploy_target(actions: Iterable[Action], incident: Incident) -> str:
    for a in actions:
        if a.kind == "rollback_deployment" and a.target:
            return a.target
    return incident.service or "the production project"


def prevention_titles(
    incident: Incident, timeline: Sequence[TimelineEvent], actions: Sequence[Action]
) -> list[str]:
    """What would keep this from happening again, from the diagnosis (and the index hints the
    database playbook recorded); empty when triage formed no hypothesis."""
    top = top_hypothesis(incident)
    scenario = incident.scenario or (top.scenario if top else None)
    findings: dict[str, Any] = (incident.diagnosis or {}).get("findings") or {}
    titles: list[str] = []
    if scenario == "bad-deploy":
        project = _deploy_target(actions, incident)
        deploy = findings.get("last_deploy_id")
        titles.append(
            f"Add a pre-deploy check and a canary release for project {project}"
            + (f" (deployment {deploy} reached production with errors)" if deploy else "")
        )
        titles.append(f"Alert on the error rate within minutes of each deploy of {project}")
    elif scenario == "high-error-rate":
        types: dict[str, int] = findings.get("error_types") or {}
        if types:
            worst = max(types, key=lambda k: types[k])
            titles.append(f"Fix the cause of the {worst} errors and add a regression test")
        titles.append("Add error-budget alerting on the error rate per endpoint")
    elif scenario == "auth-failure":
        titles.append("Monitor auth key expiry (alert before keys expire)")
        if findings.get("auth_rate_limited"):
            titles.append("Monitor auth rate-limit headroom and alert before requests get 429")
    elif scenario == "db-degradation":
        for e in timeline:
            if e.kind == "recommendation" and e.data.get("table"):
                column = e.data.get("column")
                titles.append(
                    f"Add index on {e.data['table']}"
                    + (f" ({column})" if column else " (its filtering column)")
                    + " in a schema migration"
                )
        if findings.get("long_running_queries"):
            titles.append("Set a statement_timeout for the application's database role")
        if not titles:
            titles.append("Review the slow queries and the connection pool size")
    elif scenario == "edge-timeouts":
        slow: dict[str, int] = findings.get("function_timeouts") or {}
        for name in sorted(slow):
            titles.append(f"Add a timeout and a circuit breaker to function {name}")
        if not slow:
            titles.append("Add timeouts and circuit breakers to the edge functions' upstream calls")
    return list(dict.fromkeys(titles))


def prevention_items(
    incident: Incident,
    timeline: Sequence[TimelineEvent],
    actions: Sequence[Action],
    policy: Policy,
    now: datetime,
) -> list[PreventionItem]:
    """The prevention items with their owner (the policy's, per scenario) and due time."""
    owner = policy.rca.owner(incident.scenario)
    due = now + policy.rca.action_item_due
    return [PreventionItem(t, owner, due) for t in prevention_titles(incident, timeline, actions)]


def new_items(
    proposed: Sequence[PreventionItem], existing: Sequence[ActionItem]
) -> list[PreventionItem]:
    """The proposed items whose title is not already an action item (so a re-run adds none)."""
    seen = {" ".join(i.title.lower().split()) for i in existing}
    return [p for p in proposed if " ".join(p.title.lower().split()) not in seen]


# --- the document ------------------------------------------------------------------------------


def render_rca(
    incident: Incident,
    timeline: Sequence[TimelineEvent],
    actions: Sequence[Action],
    action_items: Sequence[ActionItem],
    now: datetime,
    *,
    timings: Timings | None = None,
    policy: Policy | None = None,
    speed: float = 1.0,
    chart_name: str | None = None,
) -> str:
    """Render the RCA markdown for ``incident``.

    Args:
        incident: the incident (its diagnosis gives the root-cause hypothesis and impact).
        timeline: its timeline events, in order.
        actions: its action records.
        action_items: its follow-up items (prevention items included).
        now: when the RCA is written.
        timings: its response times (``runbook.timings.incident_timings``); None: marked missing.
        policy: for the response-time targets; None: the table is marked missing.
        speed: a drill's time compression (targets are divided by it).
        chart_name: the chart's file name next to the document, if one was drawn.
    """
    end = incident.resolved_at or incident.closed_at
    duration = seconds_text((utc(end) - utc(incident.detected_at)).total_seconds()) if end else None
    diag = incident.diagnosis or {}
    radius = diag.get("blast_radius") or {}
    affected = (
        f"~{radius['estimate']} users (estimate: {radius.get('basis', '')})"
        if radius.get("estimate") is not None
        else None
    )
    findings = diag.get("findings") or {}
    technical = None
    if findings.get("error_rate_pct") is not None:
        technical = f"error rate {findings['error_rate_pct']:.2f} %"
        if findings.get("p95_ms") is not None:
            technical += f", p95 latency {findings['p95_ms']:.0f} ms"
    resolution = [
        f"{a.kind} on {a.target}: {a.status.value} (by {a.actor})"
        for a in actions
        if a.status is ActionStatus.APPLIED and a.kind not in COMMUNICATION
    ]
    lines = timeline_lines(timeline, actions)
    same_day = all(utc(x.at).date() == utc(incident.detected_at).date() for x in lines)
    rows = (
        response_rows(timings, policy, incident.severity, speed)
        if timings is not None and policy is not None
        else []
    )
    return _env.get_template("rca.md.j2").render(
        incident=incident,
        date=utc(incident.detected_at).strftime("%Y-%m-%d"),
        duration=duration,
        affected=affected,
        lines=lines,
        clock="%H:%M:%S" if same_day else "%Y-%m-%d %H:%M:%S",
        rows=rows,
        no_deadlines=timings is not None and not timings.phases,
        hypothesis=top_hypothesis(incident),
        has_diagnosis=incident.diagnosis is not None,
        technical=technical,
        resolution=resolution,
        action_items=action_items,
        chart_name=chart_name,
        now=utc(now),
        PERSON=PERSON,
        CHART_ALT=CHART_ALT,
    )
