"""Report numbers (runbook/stats.py) on a set of incidents whose answers are known by hand."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from runbook.ledger.records import Deadline
from runbook.models import (
    ActionItem,
    ActionItemStatus,
    Incident,
    IncidentStatus,
    Phase,
    Severity,
    TimelineEvent,
)
from runbook.stats import IncidentFacts, digest_markdown, render_markdown, summarize, trend
from runbook.timings import incident_timings

T0 = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
NOW = T0 + timedelta(hours=2)


def _m(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def _facts(
    incident_id: int,
    severity: Severity,
    *,
    ack: float | None,
    resolved: float | None,
    phases: dict[Phase, tuple[float, float | None, float]],
    scenario: str | None = None,
    start: datetime = T0,
) -> IncidentFacts:
    """An incident detected at ``start``; phases: phase -> (started, ended or None, due), minutes."""

    def at(minutes: float | None) -> datetime | None:
        return None if minutes is None else start + timedelta(minutes=minutes)

    inc = Incident(
        id=incident_id,
        dedup_key=f"k{incident_id}",
        title=f"incident {incident_id}",
        severity=severity,
        status=IncidentStatus.RESOLVED if resolved is not None else IncidentStatus.TRIAGING,
        scenario=scenario,
        detected_at=start,
        acknowledged_at=at(ack),
        resolved_at=at(resolved),
    )
    events, deadlines = [], []
    for n, (phase, (began, ended, due)) in enumerate(phases.items()):
        events.append(
            TimelineEvent(
                incident_id=incident_id, at=at(began), kind="phase_started", phase=phase, message=""
            )  # type: ignore[arg-type]
        )
        if ended is not None:
            events.append(
                TimelineEvent(
                    incident_id=incident_id,
                    at=at(ended),
                    kind="phase_ended",
                    phase=phase,
                    message="",
                )  # type: ignore[arg-type]
            )
        deadlines.append(
            Deadline(id=n + 1, incident_id=incident_id, phase=phase.value, due_at=at(due))  # type: ignore[arg-type]
        )
    return IncidentFacts(incident=inc, timings=incident_timings(inc, events, deadlines))


def _known() -> list[IncidentFacts]:
    return [
        # P1: detect met (3 < 5), mitigate missed (70 > 60); TTA 2 min, TTR 30 min
        _facts(1, Severity.P1, ack=2, resolved=30, scenario="bad-deploy",
               phases={Phase.DETECT: (0, 3, 5), Phase.MITIGATE: (5, 70, 60)}),
        # P1: both met; TTA 4 min, TTR 50 min
        _facts(2, Severity.P1, ack=4, resolved=50, scenario="bad-deploy",
               phases={Phase.DETECT: (0, 4, 5), Phase.MITIGATE: (5, 40, 60)}),
        # P2, still open: triage unfinished past its 60-minute deadline at NOW (2 h) = missed;
        # mitigate due after NOW = pending
        _facts(3, Severity.P2, ack=10, resolved=None,
               phases={Phase.TRIAGE: (1, None, 60), Phase.MITIGATE: (50, None, 240)}),
        # detected before the window: left out
        _facts(4, Severity.P0, ack=1, resolved=5, start=T0 - timedelta(days=40), phases={}),
    ]  # fmt: skip


ITEMS = [
    ActionItem(id=1, incident_id=1, title="add index", due_at=NOW - timedelta(hours=1)),
    ActionItem(id=2, incident_id=1, title="breaker", due_at=NOW + timedelta(days=1)),
    ActionItem(id=3, incident_id=2, title="done one", due_at=T0, status=ActionItemStatus.DONE),
]


def test_report_numbers_on_known_incidents() -> None:
    """MTTA/MTTR per severity and overall, SLA attainment per severity and phase (met, missed,
    still-unfinished-past-due as missed, not-yet-due as pending), incidents per severity and
    scenario, and action items open/overdue match the hand-computed values."""
    s = summarize(_known(), ITEMS, T0 - timedelta(days=30), NOW)
    assert s.incidents == 3 and s.open_incidents == 1
    assert s.by_severity == {"P1": 2, "P2": 1}
    assert s.by_scenario == {"bad-deploy": 2, "unclassified": 1}
    p1 = s.severities["P1"]
    assert p1.mtta_s == 180 and p1.mttr_s == 2400
    assert (p1.phases["detect"].met, p1.phases["detect"].missed) == (2, 0)
    assert (p1.phases["mitigate"].met, p1.phases["mitigate"].missed) == (1, 1)
    assert p1.phases["mitigate"].rate == 0.5
    p2 = s.severities["P2"]
    assert p2.mttr_s is None and p2.mtta_s == 600
    assert (p2.phases["triage"].missed, p2.phases["mitigate"].pending) == (1, 1)
    assert p2.phases["mitigate"].rate is None
    assert s.mtta_s == (120 + 240 + 600) / 3 and s.mttr_s == 2400
    misses = [(m.incident_id, m.phase.value, m.late_s) for m in s.sla_misses]
    assert misses == [(1, "mitigate", 600.0), (3, "triage", 3600.0)]  # by due time, then id
    assert (s.action_items_open, s.action_items_overdue) == (2, 1)
    assert [i.id for i in s.overdue_items] == [1]
    data = s.as_json()
    assert data["severities"]["P1"]["phases"]["mitigate"]["rate"] == 0.5
    json.dumps(data)  # serializable as is
    md = render_markdown(s)
    assert "| P1 | 2 | 3m |" in md and "INC-3 (P2) triage" in md and "still unfinished" in md


def test_digest_trend_compares_the_last_day_with_the_week_before() -> None:
    """The digest's trend takes the last day's MTTA/MTTR against the 7 days before it, and its text
    lists the day's incidents, the open action items (overdue marked) and the trend."""
    facts = [
        _facts(1, Severity.P1, ack=2, resolved=20, phases={}, start=NOW - timedelta(hours=3)),
        _facts(2, Severity.P1, ack=6, resolved=60, phases={}, start=NOW - timedelta(days=3)),
        _facts(3, Severity.P2, ack=10, resolved=100, phases={}, start=NOW - timedelta(days=9)),
    ]
    tr = trend(facts, NOW)
    assert (tr.today_mtta_s, tr.today_mttr_s) == (120, 1200)
    assert (tr.before_mtta_s, tr.before_mttr_s) == (360, 3600)
    open_items = [i for i in ITEMS if i.status is not ActionItemStatus.DONE]
    text, day, _ = digest_markdown(facts, open_items, NOW)
    assert day.incidents == 1 and day.by_severity == {"P1": 1}
    assert "MTTR 20m (7 days before: 1h, better)" in text
    assert "#1 add index" in text and "(overdue)" in text and "#2 breaker" in text
