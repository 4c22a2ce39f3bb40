"""Run a side effect at most once: plan, record under an idempotency key, apply, record the result.

Every side effect of the runbook (a page, a ticket, a message, a rollback, a terminated backend) goes
through ``run_action``. The ledger's unique idempotency key makes a retried task, a re-run flow or a
restarted worker find the recorded result instead of doing it again. A dry run records the plan under
its own key (``dry:<key>``) and changes nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import BaseModel

from runbook.errors import PermanentError
from runbook.ledger import Ledger
from runbook.models import Action, ActionStatus


class ActionOutcome(BaseModel):
    """What happened to one action: applied now, found already applied, skipped, or failed."""

    action: Action
    applied_now: bool = False
    already_done: bool = False

    @property
    def result(self) -> dict[str, Any]:
        return self.action.result

    @property
    def status(self) -> ActionStatus:
        return self.action.status


def action_key(incident_id: int, kind: str, target: str = "", *extra: str) -> str:
    """The idempotency key of an action: the same incident, kind and target give the same key."""
    parts = [f"INC-{incident_id}", kind, target, *extra]
    return ":".join(p for p in parts if p)


async def run_action(
    ledger: Ledger,
    *,
    incident_id: int,
    key: str,
    kind: str,
    target: str,
    plan: dict[str, Any],
    apply: Callable[[], Awaitable[dict[str, Any]]],
    actor: str = "runbook",
    dry_run: bool = False,
) -> ActionOutcome:
    """Apply ``apply`` at most once for ``key`` and record what happened.

    Args:
        ledger: where actions are recorded.
        incident_id: the incident the action belongs to.
        key: the idempotency key (see ``action_key``).
        kind: what the action is (``page_oncall``, ``rollback_deployment`` ...).
        target: what it acts on (a project, a channel, a backend pid ...).
        plan: exactly what would change; stored before anything runs. No secrets.
        apply: the coroutine that makes the change; returns a JSON-able result (no secrets).
        actor: who or what runs it.
        dry_run: record the plan as skipped and change nothing.

    Returns:
        ActionOutcome; ``already_done`` when an earlier run applied it.

    Raises:
        TransientError: the change may not have happened; the action stays planned so a retry applies it.
        PermanentError: recorded as failed, then re-raised.
    """
    if dry_run:
        key = f"dry:{key}"
    action, created = await asyncio.to_thread(
        ledger.begin_action, incident_id, key, kind, target, plan, actor
    )
    if not created and action.status in (ActionStatus.APPLIED, ActionStatus.SKIPPED):
        return ActionOutcome(action=action, already_done=True)
    if dry_run:
        done = await asyncio.to_thread(
            ledger.finish_action, key, ActionStatus.SKIPPED, {"dry_run": True, "would": plan}
        )
        return ActionOutcome(action=done)
    try:
        result = await apply()
    except PermanentError as exc:
        await asyncio.to_thread(
            ledger.finish_action,
            key,
            ActionStatus.FAILED,
            {"error": str(exc), "system": exc.system},
        )
        raise
    done = await asyncio.to_thread(ledger.finish_action, key, ActionStatus.APPLIED, result)
    return ActionOutcome(action=done, applied_now=True)


def envelope_verdict(
    *,
    recent_applied: list[Action],
    failures: int,
    max_failures: int,
    min_interval_text: str,
) -> str | None:
    """The safety envelope around one action: None to go ahead, else the reason to hold back.

    Args:
        recent_applied: the same action on the same target applied within its minimum interval
            (any incident).
        failures: how often this action already failed for this incident.
        max_failures: the circuit breaker's limit (policy ``approvals.max_failed_applications``).
        min_interval_text: the interval, for the message.
    """
    if failures >= max_failures:
        return f"it failed {failures} times for this incident: handing it to a person (circuit breaker)"
    if recent_applied:
        last = recent_applied[0]
        return (
            f"it already ran on this target within {min_interval_text} "
            f"(INC-{last.incident_id}, {last.idempotency_key}); at most once per {min_interval_text}"
        )
    return None
