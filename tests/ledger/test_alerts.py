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


def test_batch_counts_in_the_order_given_within_a_key(ledger: Ledger, clock) -> None:  # type: ignore[no-untyped-def]
    """In one batch a resolved alert before any firing one finds no incident; the first firing one
    opens it, the later ones (firing or resolved) attach, and alert_count counts the firing ones."""
    outcomes = ledger.record_alerts(
        [resolved("r0", "k"), make_alert("f1", "k"), make_alert("f2", "k"), resolved("r3", "k"),
         make_alert("f4", "k")]
    )  # fmt: skip
    assert [(o.opened, o.attached, o.incident_id is None) for o in outcomes] == [
        (False, False, True), (True, False, False), (False, True, False), (False, True, False),
        (False, True, False),
    ]  # fmt: skip
    incident = ledger.get_incident(outcomes[1].incident_id or 0)
    assert incident.alert_count == 3 and count(ledger, outbox) == 1
    assert [a.delivery_id for a in ledger.alerts_for(incident.id)] == ["f1", "f2", "r3", "f4"]
    events = ledger.timeline(incident.id)
    assert [e.kind for e in events] == ["alert", "alert", "alert_resolved", "alert"]
    assert events[0].message.startswith("incident opened by") and events[0].at == clock.now()
    assert [e.data["alert_id"] for e in events] == [o.alert_id for o in outcomes[1:]]


def test_batch_attaches_to_an_incident_opened_earlier(ledger: Ledger, clock) -> None:  # type: ignore[no-untyped-def]
    """A later batch adds its firing alerts to the open incident's count and stamps updated_at."""
    first = ledger.record_alert(make_alert("d0", "k"))
    clock.advance(60)
    outcomes = ledger.record_alerts(
        [make_alert(f"d{i}", "k") for i in range(1, 4)] + [resolved("r", "k")]
    )
    assert {o.incident_id for o in outcomes} == {first.incident_id}
    assert all(o.attached and not o.opened for o in outcomes)
    incident = ledger.get_incident(first.incident_id or 0)
    assert incident.alert_count == 4 and incident.updated_at == clock.now()
    assert count(ledger, incidents) == 1 and count(ledger, outbox) == 1


def test_copies_inside_a_batch_are_duplicates_of_the_first(ledger: Ledger) -> None:
    """A delivery repeated inside one batch, or already stored, is a duplicate with the stored
    alert's id and incident, and is stored once."""
    stored = ledger.record_alert(make_alert("old", "k1"))
    outcomes = ledger.record_alerts(
        [make_alert("new", "k2"), make_alert("new", "k2"), make_alert("old", "k1")]
    )
    assert [o.duplicate for o in outcomes] == [False, True, True]
    assert (outcomes[1].alert_id, outcomes[1].incident_id) == (
        outcomes[0].alert_id, outcomes[0].incident_id,
    )  # fmt: skip
    assert (outcomes[2].alert_id, outcomes[2].incident_id) == (stored.alert_id, stored.incident_id)
    assert count(ledger, alerts) == 2
    assert ledger.get_incident(outcomes[0].incident_id or 0).alert_count == 1


def test_a_large_batch_over_many_keys(ledger: Ledger) -> None:
    """2,500 alerts over 700 keys in one call (more rows than one SQLite statement takes) give 700
    incidents, 700 launches and every alert stored and linked."""
    batch = [make_alert(f"d{i}", f"k{i % 700}") for i in range(2500)]
    outcomes = ledger.record_alerts(batch)
    assert sum(o.opened for o in outcomes) == 700 and count(ledger, incidents) == 700
    assert count(ledger, alerts) == 2500 and count(ledger, outbox) == 700
    with ledger.engine.connect() as conn:
        unlinked = conn.execute(
            sa.select(sa.func.count()).where(alerts.c.incident_id.is_(None))
        ).scalar_one()
        total = conn.execute(sa.select(sa.func.sum(incidents.c.alert_count))).scalar_one()
    assert (unlinked, total) == (0, 2500)


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


def test_batch_times_are_stored_like_every_other_time(ledger: Ledger, clock) -> None:  # type: ignore[no-untyped-def]
    """The batch path stores times exactly as SQLAlchemy's UTCDateTime does (on SQLite, the same
    text with microseconds), so they compare and sort with times written elsewhere."""
    outcome = ledger.record_alert(make_alert("d1", "k1", started_at=clock.now()))
    ledger.add_event(outcome.incident_id or 0, "note", "written through Core")
    with ledger.engine.connect() as conn:
        raw = conn.exec_driver_sql(
            "SELECT received_at, started_at FROM alerts UNION ALL "
            "SELECT at, at FROM timeline_events ORDER BY 1"
        ).all()
    assert len({tuple(map(str, row)) for row in raw}) == 1
