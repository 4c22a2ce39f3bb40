"""Deadlines (SLA clocks), the outbox and dead letters."""

from __future__ import annotations

from datetime import timedelta

import pytest

from runbook.clock import ManualClock
from runbook.errors import LedgerPermanentError
from runbook.ledger import Ledger
from runbook.ledger.queue import OUTBOX_LEASE_S
from runbook.models import IncidentStatus
from tests.ledger.helpers import T0, make_alert

MIN = timedelta(minutes=1)


def opened(ledger: Ledger, key: str = "k1") -> int:
    outcome = ledger.record_alert(make_alert(f"d-{key}", key))
    assert outcome.incident_id is not None
    return outcome.incident_id


def test_deadlines_are_set_listed_and_come_due(ledger: Ledger) -> None:
    """set_deadlines stores each phase; due_deadlines returns those due, not met, not escalated."""
    incident_id = opened(ledger)
    stored = ledger.set_deadlines(incident_id, {"detect": T0 + 5 * MIN, "triage": T0 + 15 * MIN})
    assert [(d.phase, d.due_at) for d in stored] == [
        ("detect", T0 + 5 * MIN),
        ("triage", T0 + 15 * MIN),
    ]
    assert ledger.deadlines(incident_id) == stored
    assert ledger.due_deadlines(T0 + 4 * MIN) == []
    assert [d.phase for d in ledger.due_deadlines(T0 + 5 * MIN)] == ["detect"]
    ledger.mark_deadline(incident_id, "detect", met_at=T0 + 3 * MIN)
    escalated = ledger.mark_deadline(incident_id, "triage", escalated_at=T0 + 16 * MIN)
    assert escalated.escalated_at == T0 + 16 * MIN and escalated.met_at is None
    assert ledger.due_deadlines(T0 + 60 * MIN) == []


def test_due_deadlines_use_the_clock_and_skip_closed_incidents(
    ledger: Ledger, clock: ManualClock
) -> None:
    """Without now, the ledger's clock decides; deadlines of resolved incidents are never due."""
    live, done = opened(ledger, "a"), opened(ledger, "b")
    ledger.set_deadlines(live, {"detect": T0 + MIN})
    ledger.set_deadlines(done, {"detect": T0 + MIN})
    ledger.transition(done, IncidentStatus.RESOLVED)
    assert ledger.due_deadlines() == []
    clock.advance(61)
    assert [d.incident_id for d in ledger.due_deadlines()] == [live]


def test_set_deadlines_keeps_stamps_unless_the_due_time_moves(ledger: Ledger) -> None:
    """Re-setting an unchanged deadline keeps its stamps; moving it clears them."""
    incident_id = opened(ledger)
    ledger.set_deadlines(incident_id, {"detect": T0 + 5 * MIN, "triage": T0 + 15 * MIN})
    ledger.mark_deadline(incident_id, "detect", met_at=T0 + MIN)
    ledger.mark_deadline(incident_id, "triage", escalated_at=T0 + 16 * MIN)
    after = ledger.set_deadlines(incident_id, {"detect": T0 + 5 * MIN, "triage": T0 + 30 * MIN})
    by_phase = {d.phase: d for d in after}
    assert by_phase["detect"].met_at == T0 + MIN
    assert by_phase["triage"].due_at == T0 + 30 * MIN and by_phase["triage"].escalated_at is None
    assert len(after) == 2


def test_deadline_errors_say_what_is_missing(ledger: Ledger) -> None:
    """Unknown incidents or phases and a stamp-less mark raise LedgerPermanentError."""
    with pytest.raises(LedgerPermanentError, match="no incident INC-8"):
        ledger.set_deadlines(8, {"detect": T0})
    incident_id = opened(ledger)
    with pytest.raises(LedgerPermanentError, match="no 'rca' deadline"):
        ledger.mark_deadline(incident_id, "rca", met_at=T0)
    with pytest.raises(LedgerPermanentError, match="met_at or escalated_at"):
        ledger.mark_deadline(incident_id, "rca")


def test_outbox_claim_leases_items_and_done_removes_them(ledger: Ledger) -> None:
    """A claimed item is hidden for the lease, attempts counts claims, and done ends it."""
    first = ledger.outbox_enqueue("notify", {"n": 1})
    second = ledger.outbox_enqueue("notify", {"n": 2})
    claimed = ledger.outbox_claim(limit=1)
    assert [(i.id, i.attempts, i.payload) for i in claimed] == [(first.id, 1, {"n": 1})]
    assert claimed[0].available_at == T0 + timedelta(seconds=OUTBOX_LEASE_S)
    assert [i.id for i in ledger.outbox_claim()] == [second.id]
    assert ledger.outbox_claim() == []
    ledger.outbox_done(second.id)
    later = T0 + timedelta(seconds=OUTBOX_LEASE_S)
    again = ledger.outbox_claim(now=later)
    assert [(i.id, i.attempts) for i in again] == [(first.id, 2)]
    assert ledger.outbox_claim(now=later + timedelta(hours=1)) != []
    ledger.outbox_done(first.id)
    assert ledger.outbox_claim(now=later + timedelta(hours=2)) == []


def test_outbox_retry_delays_and_records_the_error(ledger: Ledger, clock: ManualClock) -> None:
    """outbox_retry puts the item back after the delay with its last error."""
    item = ledger.outbox_enqueue("launch_incident", {"incident_id": 1})
    ledger.outbox_claim()
    ledger.outbox_retry(item.id, "prefect unreachable", delay_s=30)
    assert ledger.outbox_claim(now=T0 + timedelta(seconds=29)) == []
    (back,) = ledger.outbox_claim(now=T0 + timedelta(seconds=30))
    assert (back.last_error, back.attempts) == ("prefect unreachable", 2)
    with pytest.raises(LedgerPermanentError, match="no outbox item 999"):
        ledger.outbox_done(999)


def test_outbox_stats_reports_pending_and_oldest_age(ledger: Ledger, clock: ManualClock) -> None:
    """outbox_stats counts undelivered items and the age of the oldest by the clock."""
    assert ledger.outbox_stats() == {"pending": 0, "oldest_age_s": None}
    first = ledger.outbox_enqueue("notify", {})
    clock.advance(10)
    ledger.outbox_enqueue("notify", {})
    clock.advance(5)
    assert ledger.outbox_stats() == {"pending": 2, "oldest_age_s": 15.0}
    ledger.outbox_done(first.id)
    assert ledger.outbox_stats() == {"pending": 1, "oldest_age_s": 5.0}


def test_dead_letters_keep_the_body_and_drop_secret_headers(ledger: Ledger) -> None:
    """A dead letter stores body and reason, without authorization or signature headers."""
    headers = {
        "Authorization": "Bearer s3cret",
        "X-PagerDuty-Signature": "v1=abc",
        "X-Grafana-Alerting-Signature": "def",
        "Content-Type": "application/json",
        "X-Webhook-Id": "wh-1",
    }
    first = ledger.dead_letter("pagerduty", "bad signature", b"\x00{raw", headers)
    second = ledger.dead_letter("generic", "not JSON", b"nope", {})
    letters = ledger.dead_letters()
    assert [d.id for d in letters] == [second, first]
    stored = letters[1]
    assert (stored.source, stored.reason, stored.raw_body) == (
        "pagerduty",
        "bad signature",
        b"\x00{raw",
    )
    assert stored.headers == {"content-type": "application/json", "x-webhook-id": "wh-1"}
    assert stored.received_at == T0
    assert len(ledger.dead_letters(limit=1)) == 1
