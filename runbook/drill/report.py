"""What a drill reports: the JSON document (``--json PATH``) and the summary table, from the ledger.

Everything here is read back from the ledger and the sandbox's request log after the run, so the report
shows what happened, not what the drill intended.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from pydantic import BaseModel, Field
from rich.table import Table

from runbook.ledger import Ledger
from runbook.models import ActionStatus, Incident, Phase
from runbook.timings import Timings, incident_timings

PHASES = [p.value for p in Phase]


class PhaseRow(BaseModel):
    name: str
    started_at: datetime | None
    ended_at: datetime | None
    duration_s: float | None
    sla_s: float | None
    breached: bool | None
    state: str = Field(description="pending | running | done | breached")


class ActionRow(BaseModel):
    kind: str
    target: str
    status: str
    idempotency_key: str


class NotificationRow(BaseModel):
    channel: str
    count: int


class ReminderRow(BaseModel):
    kind: str
    due_at: datetime


class DrillReport(BaseModel):
    """The drill's JSON report (the issue's required fields, and a few more)."""

    scenario: str
    incident_id: int | None
    severity: str | None
    mitigated: bool
    verified: bool
    dry_run: bool = False
    speed: float
    status: str | None = None
    phases: list[PhaseRow] = Field(default_factory=list)
    actions: list[ActionRow] = Field(default_factory=list)
    notifications: list[NotificationRow] = Field(default_factory=list)
    reminders: list[ReminderRow] = Field(default_factory=list)
    rca_path: str | None = None
    chart_path: str | None = None
    time_to_mitigate_s: float | None = None
    alert_to_first_action_s: float | None = None
    ledger_url: str | None = None
    folder: str | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        """The drill's verdict: mitigated and verified (a dry run: every phase ran)."""
        if self.dry_run:
            return all(p.state in ("done", "breached") for p in self.phases) and bool(self.phases)
        return self.mitigated and self.verified


def phase_rows(timings: Timings, now: datetime | None = None) -> list[PhaseRow]:
    """One row per runbook phase, in order, with its state at ``now`` (None: the run is over)."""
    rows = []
    by_phase = {t.phase.value: t for t in timings.phases}
    for name in PHASES:
        t = by_phase.get(name)
        if t is None or t.started_at is None:
            rows.append(
                PhaseRow(
                    name=name,
                    started_at=None,
                    ended_at=None,
                    duration_s=None,
                    sla_s=t.sla_s if t else None,
                    breached=None,
                    state="pending",
                )
            )
            continue
        duration = t.duration_s
        if t.ended_at is None and now is not None:
            duration = (now - t.started_at).total_seconds()
        breached = t.breached
        if t.ended_at is None and now is not None and t.due_at is not None:
            breached = now > t.due_at
        state = "running" if t.ended_at is None else "done"
        if breached:
            state = "breached" if t.ended_at is not None else "running"
        rows.append(
            PhaseRow(
                name=name,
                started_at=t.started_at,
                ended_at=t.ended_at,
                duration_s=duration,
                sla_s=t.sla_s,
                breached=breached,
                state=state,
            )
        )
    # in the order they ran; those that have not started last
    return sorted(rows, key=lambda r: (r.started_at is None, r.started_at or datetime.min))


def build_report(
    ledger: Ledger,
    incident_id: int,
    *,
    scenario: str,
    speed: float,
    dry_run: bool,
    alert_sent_at: datetime | None,
    notifications: dict[str, int],
    rca_path: str | None,
) -> DrillReport:
    """Read the incident back from the ledger into the report."""
    inc: Incident = ledger.get_incident(incident_id)
    timeline = ledger.timeline(incident_id)
    timings = incident_timings(inc, timeline, ledger.deadlines(incident_id))
    actions = ledger.actions_for(incident_id)
    first_action = min((a.created_at for a in actions if a.created_at is not None), default=None)
    verify_failed = any(e.kind == "verify_failed" for e in timeline)
    chart = None
    if rca_path:
        rca = Path(rca_path)
        chart = next(
            (p for p in sorted(rca.parent.glob(f"{rca.stem}*")) if p.suffix in (".png", ".svg")),
            None,
        )
    return DrillReport(
        scenario=scenario,
        incident_id=incident_id,
        severity=inc.severity.value,
        status=inc.status.value,
        mitigated=inc.mitigated_at is not None,
        verified=inc.resolved_at is not None and not verify_failed,
        dry_run=dry_run,
        speed=speed,
        phases=phase_rows(timings),
        actions=[
            ActionRow(
                kind=a.kind,
                target=a.target,
                status=a.status.value,
                idempotency_key=a.idempotency_key,
            )
            for a in actions
        ],
        notifications=[NotificationRow(channel=k, count=v) for k, v in notifications.items()],
        rca_path=rca_path,
        chart_path=str(chart) if chart else None,
        time_to_mitigate_s=timings.ttm_s,
        alert_to_first_action_s=(
            (first_action - alert_sent_at).total_seconds()
            if first_action is not None and alert_sent_at is not None
            else None
        ),
    )


def _secs(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"


def phase_table(rows: list[PhaseRow], speed: float, title: str = "Phases") -> Table:
    """Each phase against its SLA (real seconds; the SLA as the policy states it, compressed)."""
    table = Table(title=title, title_justify="left")
    for col in ("phase", "state", "took", "SLA (from detection)", "verdict"):
        table.add_column(col)
    styles = {"done": "green", "breached": "red", "running": "yellow", "pending": "dim"}
    for r in rows:
        nominal = f" ({r.sla_s * speed / 60:.0f} min at 1x)" if r.sla_s is not None else ""
        verdict = "-" if r.breached is None else ("[red]missed[/]" if r.breached else "met")
        table.add_row(
            r.name,
            f"[{styles.get(r.state, 'white')}]{r.state}[/]",
            _secs(r.duration_s),
            (_secs(r.sla_s) + nominal) if r.sla_s is not None else "none",
            verdict,
        )
    return table


def summary_tables(report: DrillReport) -> list[Table]:
    """The closing summary: phases vs SLA, actions, notifications, and the headline numbers."""
    tables = [phase_table(report.phases, report.speed)]
    actions = Table(title="Actions", title_justify="left")
    for col in ("kind", "target", "status"):
        actions.add_column(col)
    for a in report.actions:
        style = "green" if a.status == ActionStatus.APPLIED.value else "yellow"
        actions.add_row(a.kind, a.target, f"[{style}]{a.status}[/]")
    tables.append(actions)
    notes = Table(title="Notifications", title_justify="left")
    notes.add_column("channel")
    notes.add_column("sent")
    for n in report.notifications:
        notes.add_row(n.channel, str(n.count))
    tables.append(notes)
    head = Table(title="Outcome", title_justify="left", show_header=False)
    head.add_column("what")
    head.add_column("value")
    head.add_row("incident", f"INC-{report.incident_id} ({report.severity}, {report.status})")
    head.add_row("mitigated / verified", f"{report.mitigated} / {report.verified}")
    head.add_row("alert -> first action", _secs(report.alert_to_first_action_s))
    head.add_row("time to mitigate", _secs(report.time_to_mitigate_s))
    for r in report.reminders:
        head.add_row(f"review {r.kind}", r.due_at.isoformat(timespec="seconds"))
    tables.append(head)
    return tables
