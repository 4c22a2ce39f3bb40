"""Actions under idempotency keys, and follow-up action items."""

from __future__ import annotations

from datetime import timedelta

import pytest

from runbook.clock import ManualClock
from runbook.errors import LedgerPermanentError
from runbook.ledger import Ledger
from runbook.models import ActionItemStatus, ActionStatus
from tests.ledger.helpers import T0, make_alert


def opened(ledger: Ledger, key: str = "k1") -> int:
    outcome = ledger.record_alert(make_alert(f"d-{key}", key))
    assert outcome.incident_id is not None
    return outcome.incident_id


def test_begin_action_twice_returns_the_first_record(ledger: Ledger, clock: ManualClock) -> None:
    """The first begin creates a planned action; the second returns it with created=False."""
    incident_id = opened(ledger)
    action, created = ledger.begin_action(
        incident_id, "INC-1:rollback:dpl_1", "rollback_deployment", target="dpl_1",
        plan={"to": "dpl_0"}, actor="mitigate",
    )  # fmt: skip
    assert created and action.status == ActionStatus.PLANNED and action.id is not None
    assert (action.plan, action.actor, action.created_at) == ({"to": "dpl_0"}, "mitigate", T0)
    clock.advance(5)
    again, created_again = ledger.begin_action(
        incident_id, "INC-1:rollback:dpl_1", "rollback_deployment", plan={"to": "other"}
    )
    assert not created_again and again == action
    assert ledger.actions_for(incident_id) == [action]


def test_finish_action_records_the_outcome(ledger: Ledger, clock: ManualClock) -> None:
    """finish_action sets the final status and result; get_action reads it back."""
    incident_id = opened(ledger)
    ledger.begin_action(incident_id, "key-1", "page_oncall")
    clock.advance(3)
    done = ledger.finish_action("key-1", ActionStatus.APPLIED, {"incident": "PD-1"})
    assert (done.status, done.result, done.updated_at) == (
        ActionStatus.APPLIED,
        {"incident": "PD-1"},
        T0 + timedelta(seconds=3),
    )
    kept = ledger.finish_action("key-1", "failed")
    assert kept.status == ActionStatus.FAILED and kept.result == {"incident": "PD-1"}
    assert ledger.get_action("key-1") == kept
    assert ledger.get_action("nope") is None


def test_finish_action_refuses_unknown_keys_and_non_final_status(ledger: Ledger) -> None:
    """Finishing an unrecorded key or to 'planned' raises LedgerPermanentError saying what to do."""
    with pytest.raises(LedgerPermanentError, match="begin_action"):
        ledger.finish_action("missing", "applied")
    with pytest.raises(LedgerPermanentError, match="applied, failed or skipped"):
        ledger.finish_action("missing", ActionStatus.PLANNED)


def test_begin_action_for_a_missing_incident_is_refused(ledger: Ledger) -> None:
    """An action for an unknown incident raises LedgerPermanentError naming it."""
    with pytest.raises(LedgerPermanentError, match="no incident INC-9"):
        ledger.begin_action(9, "k", "page_oncall")


def test_actions_for_lists_only_that_incident_oldest_first(ledger: Ledger) -> None:
    """actions_for returns the incident's actions in creation order and nobody else's."""
    first, second = opened(ledger, "a"), opened(ledger, "b")
    ledger.begin_action(first, "a-1", "post_message")
    ledger.begin_action(second, "b-1", "post_message")
    ledger.begin_action(first, "a-2", "create_ticket")
    assert [a.idempotency_key for a in ledger.actions_for(first)] == ["a-1", "a-2"]


def test_action_items_add_update_and_list(ledger: Ledger, clock: ManualClock) -> None:
    """Action items are added open, updated field by field, and listed by incident and status."""
    first, second = opened(ledger, "a"), opened(ledger, "b")
    due = T0 + timedelta(days=7)
    item = ledger.add_action_item(first, "Add a canary stage", owner="bob", due_at=due)
    assert (item.status, item.owner, item.due_at, item.source) == (
        ActionItemStatus.OPEN,
        "bob",
        due,
        "rca",
    )
    other = ledger.add_action_item(second, "Alert on p95", source="review")
    undated = ledger.add_action_item(first, "Write docs")
    assert [i.id for i in ledger.action_items()] == [item.id, other.id, undated.id]
    assert [i.id for i in ledger.action_items(first)] == [item.id, undated.id]
    updated = ledger.update_action_item(item.id or 0, status="done", owner="carol")
    assert (updated.status, updated.owner, updated.due_at) == (ActionItemStatus.DONE, "carol", due)
    moved = ledger.update_action_item(undated.id or 0, due_at=due, status="in_progress")
    assert moved.due_at == due and moved.status == ActionItemStatus.IN_PROGRESS
    assert [i.id for i in ledger.action_items(first, open_only=True)] == [undated.id]


def test_action_items_refuse_missing_incidents_and_items(ledger: Ledger) -> None:
    """Adding to an unknown incident or updating an unknown item raises LedgerPermanentError."""
    with pytest.raises(LedgerPermanentError, match="no incident INC-4"):
        ledger.add_action_item(4, "x")
    with pytest.raises(LedgerPermanentError, match="no action item 12"):
        ledger.update_action_item(12, owner="x")
