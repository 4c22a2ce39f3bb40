"""Aggregates over incidents for ``runbook report`` and the daily digest.

MTTA, MTTM and MTTR (means of each incident's time to acknowledge, mitigate and resolve, from
runbook.timings), SLA attainment per severity and phase (a phase met its SLA when it ended by its
deadline; missed when it ended later, or is still unfinished past it), incidents per severity and per
scenario, and the action items that are open and overdue. Everything but ``collect`` is pure.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import datetime, timedelta
from statistics import fmean
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel

from runbook.models import ActionItem, Incident, Phase, Severity
from runbook.policy import format_duration
from runbook.timings import PhaseTiming, Timings, incident_timings

if TYPE_CHECKING:
    from runbook.ledger import Ledger

Outcome = Literal["met", "missed", "pending"]


class IncidentFacts(BaseModel):
    """One incident and its timings."""

    incident: Incident
    timings: Timings


class Attainment(BaseModel):
    """How many phases met their SLA."""

    met: int = 0
    missed: int = 0
    pending: int = 0

    @property
    def rate(self) -> float | None:
        """Met / (met + missed), None when nothing is decided yet."""
        decided = self.met + self.missed
        return self.met / decided if decided else None


class SlaMiss(BaseModel):
    incident_id: int
    severity: Severity
    phase: Phase
    due_at: datetime
    ended_at: datetime | None = None
    late_s: float


class SeverityStats(BaseModel):
    incidents: int = 0
    mtta_s: float | None = None
    mttm_s: float | None = None
    mttr_s: float | None = None
    phases: dict[str, Attainment] = {}


class Summary(BaseModel):
    """The report: every number ``runbook report`` and the digest show."""

    since: datetime
    until: datetime
    incidents: int
    open_incidents: int
    by_severity: dict[str, int]
    by_scenario: dict[str, int]
    mtta_s: float | None
    mttm_s: float | None
    mttr_s: float | None
    severities: dict[str, SeverityStats]
    sla_misses: list[SlaMiss]
    action_items_open: int
    action_items_overdue: int
    overdue_items: list[ActionItem]

    def as_json(self) -> dict[str, Any]:
        data = self.model_dump(mode="json")
        for sev, stats in self.severities.items():
            for phase, att in stats.phases.items():
                data["severities"][sev]["phases"][phase]["rate"] = att.rate
        return data


def phase_outcome(t: PhaseTiming, now: datetime) -> Outcome | None:
    """met / missed / pending for a phase with a deadline; None for one without."""
    if t.due_at is None:
        return None
    if t.ended_at is not None:
        return "missed" if t.ended_at > t.due_at else "met"
    return "missed" if now > t.due_at else "pending"


def _mean(values: Sequence[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return fmean(kept) if kept else None


def summarize(
    facts: Sequence[IncidentFacts],
    action_items: Sequence[ActionItem],
    since: datetime,
    now: datetime,
) -> Summary:
    """Aggregate the incidents detected in ``[since, now]`` and the action items given.

    Args:
        facts: incidents with their timings (others than those detected in the window are ignored).
        action_items: the action items to count (all of them, or those of the incidents).
        since: the window's start.
        now: the window's end, and the time "overdue" and "still unfinished" are judged at.
    """
    chosen = [f for f in facts if since <= f.incident.detected_at <= now]
    severities: dict[str, SeverityStats] = {}
    misses: list[SlaMiss] = []
    for sev in Severity:
        mine = [f for f in chosen if f.incident.severity is sev]
        if not mine:
            continue
        stats = SeverityStats(
            incidents=len(mine),
            mtta_s=_mean([f.timings.tta_s for f in mine]),
            mttm_s=_mean([f.timings.ttm_s for f in mine]),
            mttr_s=_mean([f.timings.ttr_s for f in mine]),
        )
        for f in mine:
            for t in f.timings.phases:
                outcome = phase_outcome(t, now)
                if outcome is None:
                    continue
                att = stats.phases.setdefault(t.phase.value, Attainment())
                setattr(att, outcome, getattr(att, outcome) + 1)
                if outcome == "missed" and t.due_at is not None:
                    end = t.ended_at or now
                    misses.append(
                        SlaMiss(
                            incident_id=f.incident.id,
                            severity=sev,
                            phase=t.phase,
                            due_at=t.due_at,
                            ended_at=t.ended_at,
                            late_s=(end - t.due_at).total_seconds(),
                        )
                    )
        order = [p.value for p in Phase]
        stats.phases = dict(sorted(stats.phases.items(), key=lambda kv: order.index(kv[0])))
        severities[sev.value] = stats
    open_items = [i for i in action_items if i.status.value != "done"]
    overdue = [i for i in open_items if i.due_at is not None and i.due_at < now]
    return Summary(
        since=since,
        until=now,
        incidents=len(chosen),
        open_incidents=sum(1 for f in chosen if f.incident.is_open),
        by_severity={s: v.incidents for s, v in severities.items()},
        by_scenario=dict(
            Counter(f.incident.scenario or "unclassified" for f in chosen).most_common()
        ),
        mtta_s=_mean([f.timings.tta_s for f in chosen]),
        mttm_s=_mean([f.timings.ttm_s for f in chosen]),
        mttr_s=_mean([f.timings.ttr_s for f in chosen]),
        severities=severities,
        sla_misses=sorted(misses, key=lambda m: (m.due_at, m.incident_id)),
        action_items_open=len(open_items),
        action_items_overdue=len(overdue),
        overdue_items=sorted(overdue, key=lambda i: (i.due_at, i.id or 0)),
    )


class Trend(BaseModel):
    """MTTA and MTTR of the last day against the seven days before it."""

    today_mtta_s: float | None
    today_mttr_s: float | None
    before_mtta_s: float | None
    before_mttr_s: float | None


def trend(facts: Sequence[IncidentFacts], now: datetime) -> Trend:
    day = timedelta(days=1)
    today = [f for f in facts if now - day <= f.incident.detected_at <= now]
    before = [f for f in facts if now - 8 * day <= f.incident.detected_at < now - day]
    return Trend(
        today_mtta_s=_mean([f.timings.tta_s for f in today]),
        today_mttr_s=_mean([f.timings.ttr_s for f in today]),
        before_mtta_s=_mean([f.timings.tta_s for f in before]),
        before_mttr_s=_mean([f.timings.ttr_s for f in before]),
    )


def parse_since(text: str) -> timedelta:
    """``30d``, ``12h``, ``2w`` ... (the policy's duration syntax).

    Raises:
        ValueError: saying what it should look like.
    """
    from runbook.policy import parse_duration

    td = parse_duration(text)
    if td <= timedelta(0):
        raise ValueError(f"{text!r} is not a positive duration; write it like 30d, 12h or 2w")
    return td


def collect(
    ledger: Ledger, since: datetime, now: datetime
) -> tuple[list[IncidentFacts], list[ActionItem]]:
    """Read the incidents detected since ``since`` with their timings, and every action item of
    those incidents, from the ledger."""
    incidents = [i for i in ledger.list_incidents(since=since) if i.detected_at <= now]
    facts = [
        IncidentFacts(
            incident=i, timings=incident_timings(i, ledger.timeline(i.id), ledger.deadlines(i.id))
        )
        for i in incidents
    ]
    ids = {i.id for i in incidents}
    items = [a for a in ledger.action_items() if a.incident_id in ids]
    return facts, items


# --- rendering ------------------------------------------------------------------------------------


def human(seconds: float | None) -> str:
    """``1h2m3s``; ``-`` for no data."""
    if seconds is None:
        return "-"
    return format_duration(timedelta(seconds=round(seconds)))


def percent(rate: float | None) -> str:
    return "-" if rate is None else f"{rate * 100:.0f}%"


def attainment_rows(summary: Summary) -> list[list[str]]:
    """``[severity, incidents, MTTA, MTTM, MTTR, then per phase "met/decided (rate)"]`` rows."""
    rows = []
    for sev, st in summary.severities.items():
        cells = [sev, str(st.incidents), human(st.mtta_s), human(st.mttm_s), human(st.mttr_s)]
        for phase in PHASES_WITH_SLA:
            att = st.phases.get(phase)
            cells.append(
                "-"
                if att is None
                else f"{att.met}/{att.met + att.missed} {percent(att.rate)}"
                + (f" +{att.pending} open" if att.pending else "")
            )
        rows.append(cells)
    return rows


PHASES_WITH_SLA = ["detect", "triage", "mitigate", "rca"]
HEADERS = ["severity", "incidents", "MTTA", "MTTM", "MTTR", *[f"{p} SLA" for p in PHASES_WITH_SLA]]


def render_markdown(summary: Summary, title: str = "Incident report") -> str:
    """The summary as a markdown document (``runbook report --format markdown``, the digest)."""
    s = summary
    out = [
        f"# {title}",
        "",
        f"{s.since:%Y-%m-%d %H:%M} to {s.until:%Y-%m-%d %H:%M} UTC: {s.incidents} incident(s), "
        f"{s.open_incidents} still open. MTTA {human(s.mtta_s)}, MTTM {human(s.mttm_s)}, "
        f"MTTR {human(s.mttr_s)}.",
        "",
        "## Per severity (SLA met/decided per phase)",
        "",
        "| " + " | ".join(HEADERS) + " |",
        "|" + "---|" * len(HEADERS),
    ]
    out += ["| " + " | ".join(r) + " |" for r in attainment_rows(s)] or ["| (none) |"]
    out += ["", "## Incidents per scenario", ""]
    out += [f"- {k}: {v}" for k, v in s.by_scenario.items()] or ["- none"]
    out += ["", f"## SLA misses ({len(s.sla_misses)})", ""]
    out += [
        f"- INC-{m.incident_id} ({m.severity.value}) {m.phase.value}: due {m.due_at:%Y-%m-%d %H:%M}"
        f", late by {human(m.late_s)}" + ("" if m.ended_at else " (still unfinished)")
        for m in s.sla_misses
    ] or ["- none"]
    out += [
        "",
        f"## Action items: {s.action_items_open} open, {s.action_items_overdue} overdue",
        "",
    ]
    out += [
        f"- INC-{i.incident_id} #{i.id} {i.title} (owner {i.owner or '-'}, due {i.due_at:%Y-%m-%d})"
        for i in s.overdue_items
        if i.due_at is not None
    ] or ["- nothing overdue"]
    return "\n".join(out) + "\n"


def trend_line(label: str, today: float | None, before: float | None) -> str:
    """``MTTR 12m (7 days before: 20m, better)``."""
    if today is None or before is None:
        word = ""
    else:
        word = ", better" if today < before else (", worse" if today > before else ", same")
    return f"{label} {human(today)} (7 days before: {human(before)}{word})"


def digest_markdown(
    facts: Sequence[IncidentFacts], open_items: Sequence[ActionItem], now: datetime
) -> tuple[str, Summary, Trend]:
    """The daily summary: the last day's incidents by severity and their SLA misses, every open
    action item (overdue first), and MTTA/MTTR of the last day against the seven days before.

    Args:
        facts: incidents of (at least) the last eight days with their timings.
        open_items: every action item not done yet, of any incident.
        now: the end of the day summarized.
    """
    day = summarize(facts, open_items, now - timedelta(days=1), now)
    tr = trend(facts, now)
    text = render_markdown(day, title=f"Daily incident summary {now:%Y-%m-%d}")
    text += "\n## Trend\n\n"
    text += f"- {trend_line('MTTA', tr.today_mtta_s, tr.before_mtta_s)}\n"
    text += f"- {trend_line('MTTR', tr.today_mttr_s, tr.before_mttr_s)}\n"
    if open_items:
        text += f"\n## Open action items ({len(open_items)})\n\n"
        ordered = sorted(open_items, key=lambda i: (i.due_at is None, i.due_at or now, i.id or 0))
        for i in ordered:
            due = f"due {i.due_at:%Y-%m-%d}" if i.due_at else "no due date"
            late = " (overdue)" if i.due_at is not None and i.due_at < now else ""
            text += (
                f"- INC-{i.incident_id} #{i.id} {i.title} (owner {i.owner or '-'}, {due}){late}\n"
            )
    return text, day, tr
