"""Recording alerts: duplicates, open vs attach, resolved alerts, batches, declarations."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from runbook.errors import LedgerPermanentError
from runbook.ledger import LAUNCH_INCIDENT, AlertIntake, Ledger
from runbook.ledger.schema import alerts, incidents, outbox
from runbook.models import Alert, IncidentStatus, Severity
from tests.ledger.helpers import make_alert, resolved


def count(ledger: Ledger, table: sa.Table) -> int:
    with ledger.engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())


def test_first_firing_alert_opens_an_incident_with_a_launch_in_the_outbox(ledger: Ledger) -> None:
    """A first firing alert opens one incident, queues its launch and writes an 'alert' event."""
    outcome = ledger.record_alert(
        make_alert("d1", "k1", service="api"), title="API down", severity=Severity.P1
    )
    assert outcome.opened and not outcome.attached and not outcome.duplicate
    incident = ledger.get_incident(outcome.incident_id or 0)
    assert (incident.title, incident.severity, incident.service) == ("API down", Severity.P1, "api")
    assert incident.status == IncidentStatus.DETECTED and incident.alert_count == 1
    items = ledger.outbox_claim()
    assert [(i.kind, i.payload, i.incident_id) for i in items] == [
        (LAUNCH_INCIDENT, {"incident_id": incident.id}, incident.id)
    ]
    assert [e.kind for e in ledger.timeline(incident.id)] == ["alert"]


def test_redelivery_is_a_duplicate_and_changes_nothing(ledger: Ledger) -> None:
    """The same (source, delivery_id) again reports duplicate and stores nothing new."""
    first = ledger.record_alert(make_alert("d1", "k1"))
    again = ledger.record_alert(make_alert("d1", "k1", summary="changed"))
    assert again.duplicate and not again.opened and not again.attached
    assert (again.alert_id, again.incident_id) == (first.alert_id, first.incident_id)
    assert count(ledger, alerts) == 1 and count(ledger, outbox) == 1
    assert ledger.get_incident(first.incident_id or 0).alert_count == 1


def test_same_delivery_id_from_another_source_is_not_a_duplicate(ledger: Ledger) -> None:
    """Deliveries are unique per source, so another sender's equal id is a new alert."""
    ledger.record_alert(make_alert("d1", "k1"))
    other = ledger.record_alert(make_alert("d1", "k1", source="grafana"))
    assert not other.duplicate and other.attached


def test_firing_alerts_with_the_same_key_attach_to_the_open_incident(ledger: Ledger) -> None:
    """Further firing alerts with the key attach to the open incident and raise its alert_count."""
    first = ledger.record_alert(make_alert("d1", "k1"))
    second = ledger.record_alert(make_alert("d2", "k1"))
    other = ledger.record_alert(make_alert("d3", "k2"))
    assert second.attached and not second.opened and second.incident_id == first.incident_id
    assert other.opened and other.incident_id != first.incident_id
    assert ledger.get_incident(first.incident_id or 0).alert_count == 2
    assert [a.delivery_id for a in ledger.alerts_for(first.incident_id or 0)] == ["d1", "d2"]
    assert count(ledger, outbox) == 2


def test_resolved_alert_never_opens_an_incident(ledger: Ledger) -> None:
    """A resolved alert without an open incident is stored, unattached, and opens nothing."""
    outcome = ledger.record_alert(resolved("d1", "k1"))
    assert (outcome.opened, outcome.attached, outcome.incident_id) == (False, False, None)
    assert (
        count(ledger, incidents) == 0 and count(ledger, outbox) == 0 and count(ledger, alerts) == 1
    )


def test_resolved_alert_attaches_to_the_open_incident(ledger: Ledger) -> None:
    """A resolved alert joins the open incident with an 'alert_resolved' event, count unchanged."""
    first = ledger.record_alert(make_alert("d1", "k1"))
    outcome = ledger.record_alert(resolved("d2", "k1"))
    assert outcome.attached and outcome.incident_id == first.incident_id
    incident = ledger.get_incident(first.incident_id or 0)
    assert incident.alert_count == 1 and incident.status == IncidentStatus.DETECTED
    assert [e.kind for e in ledger.timeline(incident.id)] == ["alert", "alert_resolved"]


def test_alert_after_resolution_opens_a_new_incident(ledger: Ledger) -> None:
    """Once the incident is resolved, the next firing alert with its key opens a new one."""
    first = ledger.record_alert(make_alert("d1", "k1"))
    ledger.transition(first.incident_id or 0, IncidentStatus.RESOLVED)
    again = ledger.record_alert(make_alert("d2", "k1"))
    assert again.opened and again.incident_id != first.incident_id


def test_severity_hint_wins_and_defaults_come_from_the_alert(ledger: Ledger) -> None:
    """The alert's severity_hint beats the argument; title/service/description default from it."""
    alert = make_alert(
        "d1", "k1", summary="DB is slow", severity_hint=Severity.P0, service="db",
        annotations={"description": "p95 over 2 s"},
    )  # fmt: skip
    outcome = ledger.record_alert(alert, severity=Severity.P3)
    incident = ledger.get_incident(outcome.incident_id or 0)
    assert (incident.severity, incident.title) == (Severity.P0, "DB is slow")
    assert (incident.service, incident.description) == ("db", "p95 over 2 s")


def test_stored_alert_round_trips(ledger: Ledger, clock) -> None:  # type: ignore[no-untyped-def]
    """Every field of an alert, raw body included, reads back as stored, times in UTC."""
    alert = make_alert(
        "d1", "k1", fingerprint="abc", labels={"alertname": "HighErrorRate"},
        annotations={"runbook": "x"}, started_at=clock.now(), links=["https://grafana/x"],
        raw_body=b'{"version":"4"}', severity_hint=Severity.P1, service="web",
    )  # fmt: skip
    outcome = ledger.record_alert(alert)
    (stored,) = ledger.alerts_for(outcome.incident_id or 0)
    assert stored.model_dump(exclude={"received_at"}) == alert.model_dump(exclude={"received_at"})
    assert stored.received_at == clock.now() and stored.received_at.tzinfo is not None


def test_record_alerts_keeps_order_and_semantics_in_one_batch(ledger: Ledger) -> None:
    """A batch returns one outcome per item in order, with in-batch duplicates and attaches."""
    outcomes = ledger.record_alerts(
        [
            make_alert("d1", "kb"),
            AlertIntake(alert=make_alert("d2", "ka"), title="A", severity=Severity.P1),
            make_alert("d3", "kb"),
            make_alert("d1", "kb"),
            resolved("d4", "kz"),
        ]
    )
    assert [(o.opened, o.attached, o.duplicate) for o in outcomes] == [
        (True, False, False),
        (True, False, False),
        (False, True, False),
        (False, False, True),
        (False, False, False),
    ]
    assert outcomes[2].incident_id == outcomes[0].incident_id
    assert ledger.get_incident(outcomes[1].incident_id or 0).title == "A"
    assert ledger.record_alerts([]) == []


@pytest.mark.filterwarnings("ignore:Pydantic serializer warnings")
def test_record_alerts_is_one_transaction(ledger: Ledger) -> None:
    """A batch with one unstorable alert stores none of them."""
    # P9 passes no CHECK constraint, so opening its incident fails inside the transaction
    bad = Alert.model_construct(**{**make_alert("d2", "k2").__dict__, "severity_hint": "P9"})
    with pytest.raises(LedgerPermanentError):
        ledger.record_alerts([make_alert("d1", "k1"), bad])
    assert (
        count(ledger, alerts) == 0 and count(ledger, incidents) == 0 and count(ledger, outbox) == 0
    )


def test_declarations_never_merge_unless_asked(ledger: Ledger) -> None:
    """Each declaration opens its own incident, unless a dedup_key names an open one."""
    first = ledger.declare_incident("Checkout broken", "P1", service="web", scenario="bad_deploy")
    second = ledger.declare_incident("Checkout broken", Severity.P1)
    assert first.id != second.id
    assert (first.severity, first.scenario, first.service) == (Severity.P1, "bad_deploy", "web")
    (synthetic,) = ledger.alerts_for(first.id)
    assert synthetic.source == "ui" and synthetic.summary == "Checkout broken"
    (event,) = ledger.timeline(first.id)
    assert event.actor == "ui" and event.kind == "alert"
    merged = ledger.declare_incident("again", "P2", dedup_key=first.dedup_key, actor="alice")
    assert merged.id == first.id and merged.alert_count == 2
    assert ledger.timeline(first.id)[-1].actor == "alice"


def test_alerts_for_a_missing_incident_is_refused(ledger: Ledger) -> None:
    """Asking for the alerts of an unknown incident raises LedgerPermanentError naming it."""
    with pytest.raises(LedgerPermanentError, match="no incident INC-42"):
        ledger.alerts_for(42)
