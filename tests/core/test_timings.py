"""Response times from the ledger's records: TTA/TTM/TTR and each phase against its deadline."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from runbook.ledger.records import Deadline
from runbook.models import Incident, IncidentStatus, Phase, Severity, TimelineEvent
from runbook.timings import incident_timings

T0 = datetime(2026, 11, 26, 3, 0, tzinfo=UTC)


def _incident(**kw: object) -> Incident:
    base = {
        "id": 1,
        "dedup_key": "k",
        "title": "errors",
        "severity": Severity.P1,
        "status": IncidentStatus.RESOLVED,
        "detected_at": T0,
    }
    return Incident.model_validate(base | kw)


def _event(kind: str, phase: Phase, minutes: float, **data: object) -> TimelineEvent:
    return TimelineEvent(
        incident_id=1,
        at=T0 + timedelta(minutes=minutes),
        kind=kind,
        phase=phase,
        message="",
        data=data,
    )


def test_times_from_detection_and_each_phase_against_its_deadline() -> None:
    """TTA/TTM/TTR count from detection; a phase ending after its deadline is breached, one ending
    before is met; the phase's reported end wins over the event's write time."""
    inc = _incident(
        acknowledged_at=T0 + timedelta(minutes=2),
        mitigated_at=T0 + timedelta(minutes=30),
        resolved_at=T0 + timedelta(minutes=50),
    )
    timeline = [
        _event("phase_started", Phase.DETECT, 0),
        _event("phase_ended", Phase.DETECT, 4, ended_at=(T0 + timedelta(minutes=3)).isoformat()),
        _event("phase_started", Phase.TRIAGE, 4),
        _event("phase_ended", Phase.TRIAGE, 20),
    ]
    deadlines = [
        Deadline(id=1, incident_id=1, phase="detect", due_at=T0 + timedelta(minutes=5)),
        Deadline(id=2, incident_id=1, phase="triage", due_at=T0 + timedelta(minutes=15)),
    ]
    t = incident_timings(inc, timeline, deadlines)
    assert (t.tta_s, t.ttm_s, t.ttr_s) == (120.0, 1800.0, 3000.0)
    by = {p.phase: p for p in t.phases}
    assert by[Phase.DETECT].duration_s == 180.0 and by[Phase.DETECT].breached is False
    assert by[Phase.DETECT].sla_s == 300.0
    assert by[Phase.TRIAGE].duration_s == 960.0 and by[Phase.TRIAGE].breached is True


def test_missing_data_is_none_not_an_error() -> None:
    """An open incident with no events and no deadlines: every figure is None, no phase invented."""
    t = incident_timings(_incident(status=IncidentStatus.DETECTED), [], [])
    assert (t.tta_s, t.ttm_s, t.ttr_s) == (None, None, None)
    assert t.phases == []


def test_a_phase_still_running_has_no_duration_or_verdict() -> None:
    """Started, not ended: no duration and no verdict yet, but its deadline is known."""
    t = incident_timings(
        _incident(status=IncidentStatus.MITIGATING),
        [_event("phase_started", Phase.MITIGATE, 10)],
        [Deadline(id=1, incident_id=1, phase="mitigate", due_at=T0 + timedelta(hours=1))],
    )
    (p,) = t.phases
    assert p.started_at is not None and p.ended_at is None
    assert p.duration_s is None and p.breached is None and p.sla_s == 3600.0
