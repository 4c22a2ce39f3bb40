"""How fast an incident was handled: time to acknowledge, mitigate and resolve, and each phase vs its SLA.

Pure: computed from the incident, its timeline (``phase_started`` / ``phase_ended`` events written by the
parent flow) and its deadlines. Missing data gives None, never an error.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from pydantic import BaseModel

from runbook.ledger.records import Deadline
from runbook.models import Incident, Phase, TimelineEvent


class PhaseTiming(BaseModel):
    """One phase: when it ran, its deadline (from detection) and whether it was met."""

    phase: Phase
    started_at: datetime | None = None
    ended_at: datetime | None = None
    due_at: datetime | None = None
    sla_s: float | None = None
    duration_s: float | None = None
    breached: bool | None = None


class Timings(BaseModel):
    """The incident's response times, in seconds from detection."""

    detected_at: datetime
    acknowledged_at: datetime | None = None
    mitigated_at: datetime | None = None
    resolved_at: datetime | None = None
    tta_s: float | None = None
    ttm_s: float | None = None
    ttr_s: float | None = None
    phases: list[PhaseTiming]


def _when(value: object) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            return None
    return None


def _since(start: datetime, end: datetime | None) -> float | None:
    return None if end is None else (end - start).total_seconds()


def incident_timings(
    incident: Incident, timeline: Sequence[TimelineEvent], deadlines: Sequence[Deadline]
) -> Timings:
    """The incident's timings; a phase with no events or no deadline has None where data is missing.

    A phase that ran more than once (a re-run) counts from its first start to its last end.
    """
    phases: dict[str, PhaseTiming] = {}
    for d in deadlines:
        try:
            phase = Phase(d.phase)
        except ValueError:
            continue
        phases[phase.value] = PhaseTiming(
            phase=phase, due_at=d.due_at, sla_s=_since(incident.detected_at, d.due_at)
        )
    for e in timeline:
        if e.kind not in ("phase_started", "phase_ended") or e.phase is None:
            continue
        t = phases.setdefault(e.phase.value, PhaseTiming(phase=e.phase))
        if e.kind == "phase_started":
            if t.started_at is None:
                t.started_at = e.at
        else:  # the phase's own end, as its report says (the event is written just after)
            t.ended_at = _when(e.data.get("ended_at")) or e.at
    for t in phases.values():
        if t.started_at is not None and t.ended_at is not None:
            t.duration_s = (t.ended_at - t.started_at).total_seconds()
        if t.ended_at is not None and t.due_at is not None:
            t.breached = t.ended_at > t.due_at
    order = list(Phase)
    return Timings(
        detected_at=incident.detected_at,
        acknowledged_at=incident.acknowledged_at,
        mitigated_at=incident.mitigated_at,
        resolved_at=incident.resolved_at,
        tta_s=_since(incident.detected_at, incident.acknowledged_at),
        ttm_s=_since(incident.detected_at, incident.mitigated_at),
        ttr_s=_since(incident.detected_at, incident.resolved_at),
        phases=sorted(phases.values(), key=lambda t: order.index(t.phase)),
    )
