"""Post-incident reviews as plain decisions: when each review runs, what is still open, who is next.

The policy's ``[[reviews]]`` (24h, 48h, 1w) each carry a checklist. A review run reminds only about
its own items that are still open, and escalates action items that are past due (not done) to the
next level of the escalation chain above their owner. Everything here is pure: the flows
(flows/reviews.py) and the CLI (``runbook review``) carry it out.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from runbook.models import ActionItem, ActionItemStatus, Incident
from runbook.policy import ChecklistItem, EscalationLevel, Policy, format_duration


class UnknownReviewItem(ValueError):
    """A checklist key the policy does not have; the message lists the known ones."""


class UnknownReview(ValueError):
    """A review key the policy does not have; the message lists the known ones."""


def review_times(
    policy: Policy, resolved_at: datetime, speed: float = 1.0
) -> list[tuple[str, datetime]]:
    """When each review runs: ``resolved_at`` plus its ``after``, compressed ``speed`` times.

    Returns:
        ``(review key, when)`` in the policy's order.
    """
    return [(r.key, resolved_at + r.after / speed) for r in policy.reviews]


def review_keys(policy: Policy) -> list[str]:
    return [r.key for r in policy.reviews]


def check_review_key(policy: Policy, key: str) -> str:
    """``key`` when the policy has that review.

    Raises:
        UnknownReview: naming the known keys.
    """
    if key not in review_keys(policy):
        raise UnknownReview(f"no review {key!r}; the policy has: {', '.join(review_keys(policy))}")
    return key


def known_items(policy: Policy) -> list[tuple[str, ChecklistItem]]:
    """Every checklist item of every review, as ``(review key, item)`` in the policy's order."""
    return [(r.key, item) for r in policy.reviews for item in r.checklist]


def resolve_done(policy: Policy, keys: Iterable[str]) -> list[tuple[str, str]]:
    """The ``(review key, item key)`` pairs that ``keys`` tick off.

    An item key may be written alone (``postmortem``) or with its review (``48h.postmortem``); a key
    that several reviews share ticks it in each of them.

    Raises:
        UnknownReviewItem: a key matches no item; the message lists every known key by review.
    """
    known = known_items(policy)
    out: list[tuple[str, str]] = []
    unknown: list[str] = []
    for raw in keys:
        key = raw.strip()
        review, _, item = key.rpartition(".")
        matches = [(r, i.key) for r, i in known if i.key == item and (not review or review == r)]
        if not matches:
            unknown.append(raw)
        out.extend(m for m in matches if m not in out)
    if unknown:
        by_review = "; ".join(
            f"{r.key}: {', '.join(i.key for i in r.checklist)}" for r in policy.reviews
        )
        raise UnknownReviewItem(
            f"unknown checklist item {', '.join(repr(u) for u in unknown)}; "
            f"the policy's items are {by_review}"
        )
    return out


def open_items(
    policy: Policy, review_key: str, done: Collection[tuple[str, str]]
) -> list[ChecklistItem]:
    """The review's checklist items not ticked off yet (``done`` holds (review, item) pairs)."""
    review = policy.review(review_key)
    return [i for i in review.checklist if (review.key, i.key) not in done]


def all_items_done(policy: Policy, done: Collection[tuple[str, str]]) -> bool:
    """Every item of every review is ticked off."""
    return all(pair in done for pair in ((r, i.key) for r, i in known_items(policy)))


def is_overdue(item: ActionItem, now: datetime) -> bool:
    return (
        item.status is not ActionItemStatus.DONE and item.due_at is not None and item.due_at < now
    )


def overdue_items(items: Iterable[ActionItem], now: datetime) -> list[ActionItem]:
    """Action items past their due time and not done, oldest due first."""
    late = [i for i in items if is_overdue(i, now)]
    return sorted(late, key=lambda i: (i.due_at, i.id or 0))


def next_level(policy: Policy, owner: str) -> EscalationLevel:
    """Who is above ``owner`` in the escalation chain.

    An owner who is a level of the chain (by role, or by contact) goes to the next one; the top of
    the chain stays at the top. Any other owner (a person's name) goes to the chain's first level.
    """
    chain = policy.escalation.chain
    wanted = owner.strip().casefold()
    for index, level in enumerate(chain):
        if wanted and wanted in (level.role.casefold(), level.contact.casefold()):
            return chain[min(index + 1, len(chain) - 1)]
    return chain[0]


@dataclass
class OverdueEscalation:
    """An overdue action item and the level it goes to."""

    item: ActionItem
    to: EscalationLevel
    late: timedelta

    @property
    def message(self) -> str:
        contact = f" ({self.to.contact})" if self.to.contact else ""
        owner = self.item.owner or "nobody"
        due = self.item.due_at.strftime("%Y-%m-%d %H:%M UTC") if self.item.due_at else "-"
        return (
            f"action item #{self.item.id} {self.item.title!r} (owner {owner}) was due {due} and "
            f"is not done (late by {format_duration(self.late)}): escalated to {self.to.role}{contact}"
        )


@dataclass
class ReviewDecision:
    """What one review run does."""

    review_key: str
    title: str
    open: list[ChecklistItem]
    overdue: list[OverdueEscalation]
    everything_done: bool
    open_action_items: int = 0

    @property
    def sends(self) -> bool:
        """Nothing is sent when the checklist is done and no action item is overdue."""
        return bool(self.open or self.overdue)

    @property
    def cancel_the_rest(self) -> bool:
        """Every review's items are done and no action item is open: later runs have nothing to do."""
        return self.everything_done and self.open_action_items == 0


def decide_review(
    policy: Policy,
    review_key: str,
    done: Collection[tuple[str, str]],
    items: Sequence[ActionItem],
    now: datetime,
) -> ReviewDecision:
    """What the ``review_key`` review run reminds about and escalates, at ``now``.

    Raises:
        UnknownReview: the policy has no such review.
    """
    check_review_key(policy, review_key)
    review = policy.review(review_key)
    late = [
        OverdueEscalation(i, next_level(policy, i.owner), now - i.due_at)
        for i in overdue_items(items, now)
        if i.due_at is not None
    ]
    return ReviewDecision(
        review_key=review_key,
        title=f"within {format_duration(review.after)}",
        open=open_items(policy, review_key, done),
        overdue=late,
        everything_done=all_items_done(policy, done),
        open_action_items=sum(1 for i in items if i.status is not ActionItemStatus.DONE),
    )


def reminder_text(incident: Incident, decision: ReviewDecision) -> str:
    """The reminder people read (Slack and email): open items, then overdue action items."""
    lines = [
        f"{incident.key} {incident.title} ({incident.severity.value}): post-incident review "
        f"{decision.review_key} ({decision.title} of resolution)"
    ]
    if decision.open:
        lines.append("Still open:")
        lines += [
            f"- [ ] {i.title}  (tick it: runbook review {incident.key} --done {i.key})"
            for i in decision.open
        ]
    if decision.overdue:
        lines.append("Overdue action items:")
        lines += [f"- {e.message}" for e in decision.overdue]
    return "\n".join(lines)
