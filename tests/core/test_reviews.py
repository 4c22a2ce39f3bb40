"""Post-incident review decisions (runbook/reviews.py): when reviews run, which items are open, what a
run sends, who an overdue action item goes to."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from runbook.models import ActionItem, ActionItemStatus, Incident, IncidentStatus, Severity
from runbook.policy import build_policy
from runbook.reviews import (
    UnknownReview,
    UnknownReviewItem,
    all_items_done,
    decide_review,
    next_level,
    reminder_text,
    resolve_done,
    review_times,
)

T0 = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
POLICY = build_policy()
ALL = {(r.key, i.key) for r in POLICY.reviews for i in r.checklist}


def test_review_times_are_24h_48h_1w_after_resolution_compressed_by_speed() -> None:
    """The three reviews fall at resolution + 24 h, 48 h and 1 week, divided by the speed."""
    assert review_times(POLICY, T0) == [
        ("24h", T0 + timedelta(hours=24)),
        ("48h", T0 + timedelta(hours=48)),
        ("1w", T0 + timedelta(weeks=1)),
    ]
    assert review_times(POLICY, T0, speed=100)[0] == ("24h", T0 + timedelta(minutes=14.4))


def test_done_keys_resolve_with_or_without_their_review_and_unknown_ones_list_the_known() -> None:
    """`postmortem` and `48h.postmortem` tick the 48h item; an unknown key fails naming every known
    key by review, and nothing is returned for a half-valid list."""
    assert resolve_done(POLICY, ["postmortem", "48h.postmortem"]) == [("48h", "postmortem")]
    assert resolve_done(POLICY, ["rca_drafted"]) == [("24h", "rca_drafted")]
    with pytest.raises(UnknownReviewItem) as err:
        resolve_done(POLICY, ["postmortem", "post-mortem", "24h.postmortem"])
    msg = str(err.value)
    assert "'post-mortem'" in msg and "'24h.postmortem'" in msg
    assert "24h: postmortem_scheduled" in msg and "1w: action_items_started" in msg


def _item(item_id: int, owner: str, due_h: float | None, done: bool = False) -> ActionItem:
    return ActionItem(
        id=item_id,
        incident_id=1,
        title=f"item {item_id}",
        owner=owner,
        due_at=None if due_h is None else T0 + timedelta(hours=due_h),
        status=ActionItemStatus.DONE if done else ActionItemStatus.OPEN,
    )


def test_a_review_reminds_only_about_its_own_open_items() -> None:
    """The 24h review lists its items not ticked off (never another review's), and sends."""
    d = decide_review(POLICY, "24h", {("24h", "rca_drafted"), ("48h", "postmortem")}, [], T0)
    assert [i.key for i in d.open] == [
        "postmortem_scheduled",
        "responders_invited",
        "timeline_ready",
    ]
    assert d.sends and not d.everything_done
    with pytest.raises(UnknownReview, match="24h, 48h, 1w"):
        decide_review(POLICY, "2d", set(), [], T0)


def test_all_done_sends_nothing_and_cancels_the_rest_only_without_open_action_items() -> None:
    """With every item ticked and nothing overdue a run sends nothing; the remaining runs are cancelled
    only when no action item is open either."""
    assert all_items_done(POLICY, ALL)
    quiet = decide_review(POLICY, "48h", ALL, [_item(1, "x", None, done=True)], T0)
    assert not quiet.sends and quiet.cancel_the_rest
    pending = decide_review(POLICY, "48h", ALL, [_item(2, "x", 48)], T0)
    assert not pending.sends and not pending.cancel_the_rest


def test_overdue_items_escalate_to_the_next_level_above_their_owner() -> None:
    """Past-due open items escalate (Engineering Lead -> DevOps/SRE, the top stays the top, an owner
    outside the chain goes to its first level); done or not-yet-due items do not."""
    items = [
        _item(1, "Engineering Lead", -2),
        _item(2, "Executive On-Call", -1),
        _item(3, "ann", -3),
        _item(4, "Engineering Lead", -5, done=True),
        _item(5, "Engineering Lead", 5),
        _item(6, "Engineering Lead", None),
    ]
    d = decide_review(POLICY, "1w", ALL, items, T0)
    assert [(e.item.id, e.to.role) for e in d.overdue] == [
        (3, "Engineering Lead"),
        (1, "DevOps/SRE"),
        (2, "Executive On-Call"),
    ]
    assert d.sends and "late by 2h" in d.overdue[1].message
    assert next_level(POLICY, "devops/sre").role == "Security Team"
    inc = Incident(
        id=7, dedup_key="k", title="Checkout down", severity=Severity.P1,
        status=IncidentStatus.RESOLVED, detected_at=T0,
    )  # fmt: skip
    text = reminder_text(inc, d)
    assert text.startswith("INC-7 Checkout down (P1)") and "Overdue action items" in text
    assert "Still open" not in text
