"""Review records in the ledger (SQLite and PostgreSQL): ticks keep their first time, a review run is
recorded once per incident and review, and an unknown incident changes nothing."""

from __future__ import annotations

from datetime import timedelta

import pytest

from runbook.clock import ManualClock
from runbook.errors import LedgerPermanentError
from runbook.ledger import Ledger
from runbook.ledger.reviews import done_pairs
from runbook.models import Severity
from tests.ledger.helpers import T0


def test_ticks_are_idempotent_and_keep_the_first_tick(ledger: Ledger, clock: ManualClock) -> None:
    """Ticking an item twice keeps one row with the first time and person; other incidents are
    untouched."""
    inc = ledger.declare_incident("Checkout errors", Severity.P2)
    other = ledger.declare_incident("Other", Severity.P3, dedup_key="other")
    ledger.tick_review_items(inc.id, [("48h", "postmortem")], by="ann")
    clock.advance(300)
    done = ledger.tick_review_items(inc.id, [("48h", "postmortem"), ("24h", "rca_drafted")], "bo")
    assert [(d.review_key, d.item_key, d.done_by) for d in done] == [
        ("48h", "postmortem", "ann"),
        ("24h", "rca_drafted", "bo"),
    ]
    assert done[0].done_at == T0 and done_pairs(done) == {
        ("48h", "postmortem"),
        ("24h", "rca_drafted"),
    }
    assert ledger.review_items_done(other.id) == []


def test_a_review_run_is_recorded_once(ledger: Ledger) -> None:
    """The second record of the same incident and review returns the first (created False, its flow
    run id kept); its state can move to reminded/quiet/cancelled and nothing else."""
    inc = ledger.declare_incident("Checkout errors", Severity.P2)
    first, created = ledger.record_review_run(inc.id, "24h", T0 + timedelta(days=1), "run-a")
    again, created_again = ledger.record_review_run(inc.id, "24h", T0, "run-b")
    assert created and not created_again and again.flow_run_id == "run-a"
    ledger.record_review_run(inc.id, "48h", T0 + timedelta(days=2), "run-c")
    assert [r.review_key for r in ledger.review_runs(inc.id)] == ["24h", "48h"]
    assert ledger.set_review_run_state(inc.id, "24h", "cancelled").state == "cancelled"
    with pytest.raises(LedgerPermanentError, match="state must be one of"):
        ledger.set_review_run_state(inc.id, "24h", "gone")  # type: ignore[arg-type]
    with pytest.raises(LedgerPermanentError, match="no 1w review run"):
        ledger.set_review_run_state(inc.id, "1w", "quiet")


def test_unknown_incident_is_refused(ledger: Ledger) -> None:
    """Ticking items or recording runs for an incident the ledger does not have fails naming it."""
    with pytest.raises(LedgerPermanentError, match="INC-404"):
        ledger.tick_review_items(404, [("48h", "postmortem")])
    with pytest.raises(LedgerPermanentError, match="INC-404"):
        ledger.record_review_run(404, "24h", T0, None)
