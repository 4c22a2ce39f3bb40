"""Rich renderings for people: the policy, incident lists, one incident in detail."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table

from runbook.models import Action, ActionItem, Alert, Incident, TimelineEvent
from runbook.policy import Policy, format_duration


def _t(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def policy_tables(pol: Policy) -> list[RenderableType]:
    """One table per policy section."""
    sev = Table(title="Severity levels", title_justify="left")
    for col in (
        "level",
        "name",
        "response",
        "phase scale",
        "est. resolution",
        "actions",
        "examples",
    ):
        sev.add_column(col)
    for level, s in pol.severities.items():
        sev.add_row(
            level.value,
            f"{s.name} ({s.summary})",
            format_duration(s.response_time),
            f"x{s.window_scale:g}",
            format_duration(s.estimated_resolution),
            ", ".join(a.value for a in s.actions),
            "; ".join(s.examples),
        )

    phases = Table(
        title="Phases (window after detection, x the severity's scale)", title_justify="left"
    )
    for col in ("phase", "title", "window", "checklist"):
        phases.add_column(col)
    for phase, p in pol.phases.items():
        window = f"{format_duration(p.start)}-" + (format_duration(p.end) if p.end else "ongoing")
        phases.add_row(phase.value, p.title, window, "; ".join(p.checklist))

    thr = Table(title="Monitoring thresholds", title_justify="left")
    for col in ("metric", "target", "alert at", "severity"):
        thr.add_column(col)
    for name, t in pol.thresholds.items():
        sign = "<" if t.worse == "above" else ">"
        thr.add_row(name, f"{sign} {t.target:g}{t.unit}", f"{t.alert:g}{t.unit}", t.severity.value)

    route = Table(title="Alert channels and escalation", title_justify="left")
    route.add_column("rule")
    route.add_column("value")
    r = pol.routing
    route.add_row("PagerDuty", ", ".join(s.value for s in r.pagerduty))
    route.add_row("Slack", ", ".join(s.value for s in r.slack))
    route.add_row("Status page", ", ".join(s.value for s in r.status_page))
    route.add_row("Customer email", ", ".join(s.value for s in r.customer_email))
    route.add_row("Email daily summary", "yes" if r.email_daily_summary else "no")
    route.add_row(
        "Escalate when resolution exceeds",
        f"{pol.escalation.resolution_overrun_factor:g}x estimate",
    )
    route.add_row(
        "Escalate on severity increase", "yes" if pol.escalation.on_severity_increase else "no"
    )
    route.add_row("Chain", " -> ".join(level.role for level in pol.escalation.chain))
    route.add_row("Watch for recurrence", format_duration(pol.monitoring.recurrence_watch))
    route.add_row("Approval timeout", format_duration(pol.approvals.timeout))
    relaunches = pol.recovery.max_relaunches
    route.add_row(
        "Relaunch crashed runs",
        f"up to {relaunches} time{'s' if relaunches != 1 else ''}" if relaunches else "never",
    )

    rev = Table(title="Post-incident review", title_justify="left")
    rev.add_column("within")
    rev.add_column("checklist")
    for review in pol.reviews:
        rev.add_row(format_duration(review.after), "; ".join(i.title for i in review.checklist))

    act = Table(title="Mitigation actions (auto / approve / never)", title_justify="left")
    for col in ("action", "P0", "P1", "P2", "P3", "at most every"):
        act.add_column(col)
    for name, a in pol.actions.items():
        act.add_row(name, a.P0, a.P1, a.P2, a.P3, format_duration(a.min_interval))
    return [sev, phases, thr, route, rev, act]


def incidents_table(rows: Sequence[Incident]) -> Table:
    table = Table(title="Incidents", title_justify="left")
    for col in ("id", "sev", "status", "title", "service", "alerts", "detected", "resolved"):
        table.add_column(col)
    for inc in rows:
        table.add_row(
            inc.key,
            inc.severity.value,
            inc.status.value,
            inc.title,
            inc.service or "-",
            str(inc.alert_count),
            _t(inc.detected_at),
            _t(inc.resolved_at),
        )
    return table


def incident_detail(
    inc: Incident,
    alerts: Iterable[Alert],
    events: Iterable[TimelineEvent],
    actions: Iterable[Action],
    items: Iterable[ActionItem],
) -> list[RenderableType]:
    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold")
    head.add_column()
    for label, value in (
        ("severity", inc.severity.value),
        ("status", inc.status.value),
        ("service", inc.service or "-"),
        ("dedup key", inc.dedup_key),
        ("detected", _t(inc.detected_at)),
        ("resolved", _t(inc.resolved_at)),
        ("scenario", inc.scenario or "-"),
        ("ticket", inc.ticket_ref or "-"),
    ):
        head.add_row(label, value)
    parts: list[RenderableType] = [
        Panel(Group(head), title=f"{inc.key} {inc.title}", title_align="left")
    ]

    at = Table(title="Alerts", title_justify="left")
    for col in ("source", "status", "summary", "received"):
        at.add_column(col)
    for a in alerts:
        at.add_row(a.source, a.status.value, a.summary, _t(a.received_at))
    parts.append(at)

    tl = Table(title="Timeline", title_justify="left")
    for col in ("at", "kind", "phase", "actor", "message"):
        tl.add_column(col)
    for e in events:
        tl.add_row(_t(e.at), e.kind, e.phase.value if e.phase else "-", e.actor, e.message)
    parts.append(tl)

    action_list = list(actions)
    if action_list:
        ac = Table(title="Actions", title_justify="left")
        for col in ("kind", "target", "status", "key"):
            ac.add_column(col)
        for act in action_list:
            ac.add_row(act.kind, act.target, act.status.value, act.idempotency_key)
        parts.append(ac)
    item_list = list(items)
    if item_list:
        it = Table(title="Action items", title_justify="left")
        for col in ("title", "owner", "due", "status"):
            it.add_column(col)
        for i in item_list:
            it.add_row(i.title, i.owner or "-", _t(i.due_at), i.status.value)
        parts.append(it)
    return parts
