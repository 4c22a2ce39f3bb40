"""Incidents: reading, listing, the lifecycle, updates and the timeline."""

from __future__ import annotations

from datetime import timedelta

import pytest

from runbook.clock import ManualClock
from runbook.errors import InvalidTransition, LedgerPermanentError
from runbook.ledger import Ledger
from runbook.models import Diagnosis, Hypothesis, IncidentStatus, Phase, Severity
from tests.ledger.helpers import T0, make_alert

S = IncidentStatus


def opened(ledger: Ledger, key: str = "k1", delivery: str | None = None) -> int:
    outcome = ledger.record_alert(make_alert(delivery or f"d-{key}", key))
    assert outcome.incident_id is not None
    return outcome.incident_id


def test_missing_incident_is_a_permanent_error_naming_it(ledger: Ledger) -> None:
    """get_incident of an unknown id raises LedgerPermanentError("no incident INC-7 ...")."""
    with pytest.raises(LedgerPermanentError, match=r"^no incident INC-7 in the ledger"):
        ledger.get_incident(7)


def test_list_incidents_newest_first_with_filters(ledger: Ledger, clock: ManualClock) -> None:
    """list_incidents is newest first and honours open_only, since and limit."""
    first = opened(ledger, "a")
    clock.advance(60)
    second = opened(ledger, "b")
    clock.advance(60)
    third = opened(ledger, "c")
    ledger.transition(second, S.RESOLVED)
    assert [i.id for i in ledger.list_incidents()] == [third, second, first]
    assert [i.id for i in ledger.list_incidents(open_only=True)] == [third, first]
    assert [i.id for i in ledger.list_incidents(since=T0 + timedelta(seconds=60))] == [
        third,
        second,
    ]
    assert [i.id for i in ledger.list_incidents(limit=1)] == [third]


def test_full_lifecycle_stamps_times_and_writes_status_events(
    ledger: Ledger, clock: ManualClock
) -> None:
    """Walking the lifecycle stamps mitigated/resolved/closed and logs each move with from/to."""
    incident_id = opened(ledger)
    for step, status in enumerate([S.TRIAGING, S.MITIGATING, S.MONITORING, S.RESOLVED, S.CLOSED]):
        clock.advance(60)
        incident = ledger.transition(incident_id, status, actor="alice", reason=f"step {step}")
        assert incident.status == status and incident.updated_at == clock.now()
    assert incident.mitigated_at == T0 + timedelta(seconds=180)
    assert incident.resolved_at == T0 + timedelta(seconds=240)
    assert incident.closed_at == T0 + timedelta(seconds=300)
    events = [e for e in ledger.timeline(incident_id) if e.kind == "status"]
    assert [(e.data["from"], e.data["to"]) for e in events] == [
        ("detected", "triaging"),
        ("triaging", "mitigating"),
        ("mitigating", "monitoring"),
        ("monitoring", "resolved"),
        ("resolved", "closed"),
    ]
    assert events[0].actor == "alice" and events[0].message == "status detected -> triaging: step 0"
    assert ledger.list_incidents(open_only=True) == []


def test_illegal_transition_is_refused_and_changes_nothing(ledger: Ledger) -> None:
    """detected -> closed raises InvalidTransition and leaves status and timeline untouched."""
    incident_id = opened(ledger)
    before = ledger.get_incident(incident_id)
    events = ledger.timeline(incident_id)
    with pytest.raises(InvalidTransition, match="'detected' to 'closed'"):
        ledger.transition(incident_id, S.CLOSED)
    assert ledger.get_incident(incident_id) == before
    assert ledger.timeline(incident_id) == events


def test_transition_of_a_missing_incident_is_refused(ledger: Ledger) -> None:
    """Moving an unknown incident raises LedgerPermanentError naming it."""
    with pytest.raises(LedgerPermanentError, match="no incident INC-5"):
        ledger.transition(5, S.TRIAGING)


def test_reopen_takes_the_dedup_key_back(ledger: Ledger) -> None:
    """A reopened incident is open again: it clears resolved_at and new alerts attach to it."""
    incident_id = opened(ledger)
    ledger.transition(incident_id, S.RESOLVED)
    incident = ledger.transition(incident_id, S.TRIAGING, reason="it came back")
    assert incident.is_open and incident.resolved_at is None
    outcome = ledger.record_alert(make_alert("d-again", "k1"))
    assert outcome.attached and outcome.incident_id == incident_id


def test_reopen_conflict_names_the_open_incident(ledger: Ledger) -> None:
    """Reopening while a newer incident holds the key fails, names it, and changes nothing."""
    old = opened(ledger, "k1", "d1")
    ledger.transition(old, S.RESOLVED)
    new = opened(ledger, "k1", "d2")
    with pytest.raises(LedgerPermanentError, match=f"INC-{new} is already open"):
        ledger.transition(old, S.TRIAGING)
    assert ledger.get_incident(old).status == S.RESOLVED
    assert [e.data["to"] for e in ledger.timeline(old) if e.kind == "status"] == ["resolved"]


def test_update_incident_changes_fields_and_logs_severity(
    ledger: Ledger, clock: ManualClock
) -> None:
    """update_incident stores the allowed fields and logs a severity change with from/to."""
    incident_id = opened(ledger)
    diagnosis = Diagnosis(hypotheses=[Hypothesis(scenario="bad_deploy", score=0.9)])
    incident = ledger.update_incident(
        incident_id, severity="P0", scenario="bad_deploy", ticket_ref="OPS-1",
        diagnosis=diagnosis, acknowledged_at=clock.now(), escalation_level=2, title="New title",
        description="more",
    )  # fmt: skip
    assert (incident.severity, incident.scenario, incident.ticket_ref) == (
        Severity.P0,
        "bad_deploy",
        "OPS-1",
    )
    assert incident.diagnosis == diagnosis.model_dump(mode="json")
    assert (incident.acknowledged_at, incident.escalation_level) == (clock.now(), 2)
    assert (incident.title, incident.description) == ("New title", "more")
    (event,) = [e for e in ledger.timeline(incident_id) if e.kind == "severity"]
    assert event.data == {"from": "P2", "to": "P0"}
    ledger.update_incident(incident_id, severity="P0")
    assert len([e for e in ledger.timeline(incident_id) if e.kind == "severity"]) == 1


def test_update_incident_rejects_unknown_fields_and_bad_values(ledger: Ledger) -> None:
    """Unknown field names and invalid values are refused with the field named; nothing changes."""
    incident_id = opened(ledger)
    before = ledger.get_incident(incident_id)
    with pytest.raises(LedgerPermanentError, match="cannot change status"):
        ledger.update_incident(incident_id, status="closed")
    with pytest.raises(LedgerPermanentError, match="escalation_level"):
        ledger.update_incident(incident_id, escalation_level=-1)
    with pytest.raises(LedgerPermanentError, match="severity"):
        ledger.update_incident(incident_id, severity="P7")
    assert ledger.get_incident(incident_id) == before
    with pytest.raises(LedgerPermanentError, match="no incident INC-99"):
        ledger.update_incident(99, title="x")


def test_timeline_is_ordered_by_time_then_id(ledger: Ledger, clock: ManualClock) -> None:
    """Events come back ordered by (at, id), with phase, actor and data as stored."""
    incident_id = opened(ledger)
    late = ledger.add_event(incident_id, "note", "late", at=T0 + timedelta(hours=1))
    early = ledger.add_event(
        incident_id, "phase_started", "triage", phase=Phase.TRIAGE, actor="flow", data={"n": 1}
    )
    same_time = ledger.add_event(incident_id, "note", "same time as the alert")
    timeline = ledger.timeline(incident_id)
    assert [e.message for e in timeline][1:] == [early.message, same_time.message, late.message]
    assert timeline[1] == early and early.id is not None
    assert (early.phase, early.actor, early.data, early.at) == (Phase.TRIAGE, "flow", {"n": 1}, T0)


def test_add_event_refuses_missing_incidents_and_non_json_data(ledger: Ledger) -> None:
    """add_event on an unknown incident, or with unserializable data, fails and stores nothing."""
    with pytest.raises(LedgerPermanentError, match="no incident INC-3"):
        ledger.add_event(3, "note", "x")
    incident_id = opened(ledger)
    with pytest.raises(LedgerPermanentError, match="JSON"):
        ledger.add_event(incident_id, "note", "x", data={"when": object()})
    assert [e.kind for e in ledger.timeline(incident_id)] == ["alert"]
