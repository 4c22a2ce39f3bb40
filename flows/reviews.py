"""Post-incident reviews: review runs scheduled on resolution, reminders, escalation of overdue items.

``schedule_reviews(rt, incident_id)`` (called when an incident resolves, by ``incident_response`` and
by the watcher) schedules one run of the ``review/runbook`` deployment per review of the policy (24h,
48h, 1w after resolution, compressed by the run's speed), with the idempotency key
``INC-<id>-review-<key>`` and a ledger record, so a re-resolved incident gets none twice.

The ``review`` flow is both the reminder and the way to tick items off from the Prefect UI:

- a run with ``review`` (what the schedule creates) reminds, on Slack and by email, about that review's
  checklist items still open, and escalates action items past their due time to the next level above
  their owner; a review with nothing open and nothing overdue sends nothing;
- a run with ``done`` (checklist keys, e.g. ``["postmortem"]``) ticks those items off and reminds
  nobody (the same as ``runbook review INC-42 --done postmortem``).

Either way, once every item of every review is done and no action item is open, the review runs still
scheduled are cancelled through the Prefect API.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime
from typing import Any
from uuid import UUID

from prefect import flow
from prefect.client.orchestration import get_client
from prefect.exceptions import MissingContextError, ObjectNotFound
from prefect.logging import get_run_logger
from prefect.runtime import flow_run
from prefect.states import Cancelled
from pydantic import BaseModel, Field

from flows.common import ctx_for
from flows.runtime import Options, Runtime, build_runtime
from runbook.errors import LedgerPermanentError, RunbookError
from runbook.ledger import Ledger
from runbook.ledger.reviews import ReviewRun, ReviewRunState, done_pairs
from runbook.models import Incident
from runbook.reviews import (
    ReviewDecision,
    check_review_key,
    decide_review,
    reminder_text,
    resolve_done,
    review_times,
)
from tasks.email import send_email
from tasks.slack import post_slack_message

REVIEW_DEPLOYMENT = "review/runbook"
ACTOR = "review"


class ScheduledReview(BaseModel):
    """One review run of an incident, as scheduled in Prefect and recorded in the ledger."""

    review_key: str
    scheduled_for: datetime
    flow_run_id: str | None = None
    created: bool = Field(description="True when this call scheduled it (False: it was already).")


def _log() -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("runbook.reviews")


def idempotency_key(incident_id: int, review_key: str) -> str:
    return f"INC-{incident_id}-review-{review_key}"


def _options_for(rt: Runtime) -> Options:
    """The calling run's options (policy file, block names ...), so the review runs see the same."""
    given: Any = None
    with contextlib.suppress(Exception):  # outside a flow run there are no parameters
        given = (flow_run.parameters or {}).get("options")
    try:
        base = Options.model_validate(given) if given is not None else Options()
    except ValueError:
        base = Options()
    return base.model_copy(
        update={"speed": rt.speed, "dry_run": rt.dry_run, "ledger_url": rt.ledger_url}
    )


async def schedule_reviews(rt: Runtime, incident_id: int) -> list[ScheduledReview]:
    """Schedule the incident's review runs at resolution + each review's ``after`` (compressed).

    Idempotent: a review recorded in the ledger is not scheduled again (a reopened and re-resolved
    incident keeps its first schedule), and Prefect returns the existing run for the same idempotency
    key. Without the ``review/runbook`` deployment (an in-process drill) or without the Prefect API it
    logs a warning and writes a timeline note instead of failing.

    Args:
        rt: the calling run's runtime (ledger, policy, speed).
        incident_id: a resolved incident.

    Returns:
        Every review of the policy that is scheduled now, each saying whether this call created it.
    """
    from prefect.deployments.flow_runs import arun_deployment

    inc = await rt.incident(incident_id)
    if inc.resolved_at is None:
        await rt.note(
            incident_id, "note", f"{inc.key} is not resolved: no review runs scheduled", actor=ACTOR
        )
        return []
    recorded = {
        r.review_key: r for r in await asyncio.to_thread(rt.ledger.review_runs, incident_id)
    }
    options = _options_for(rt).model_dump(mode="json")
    out: list[ScheduledReview] = []
    for key, when in review_times(rt.policy, inc.resolved_at, rt.speed):
        if key in recorded:
            out.append(_scheduled(recorded[key], created=False))
            continue
        try:
            run = await arun_deployment(
                REVIEW_DEPLOYMENT,
                parameters={"incident_id": incident_id, "review": key, "options": options},
                scheduled_time=when,
                flow_run_name=f"INC-{incident_id} review {key}",
                timeout=0,
                as_subflow=False,
                idempotency_key=idempotency_key(incident_id, key),
                tags=["runbook", "review"],
            )
        except ObjectNotFound:
            reason = (
                f"no {REVIEW_DEPLOYMENT} deployment: review reminders not scheduled "
                "(deploy it with `prefect deploy --all` or serve it with `runbook serve`)"
            )
            _log().warning("INC-%s %s", incident_id, reason)
            await rt.note(incident_id, "note", reason, actor=ACTOR)
            return out
        except Exception as exc:  # noqa: BLE001 - the incident is resolved; the failure must show, not undo it
            reason = f"review reminders not scheduled: {type(exc).__name__}: {exc}"
            _log().warning("INC-%s %s", incident_id, reason)
            await rt.note(incident_id, "note", reason, actor=ACTOR)
            return out
        rec, created = await asyncio.to_thread(
            rt.ledger.record_review_run, incident_id, key, when, str(run.id)
        )
        out.append(_scheduled(rec, created=created))
    new = [s for s in out if s.created]
    if new:
        listed = ", ".join(
            f"{s.review_key} at {s.scheduled_for:%Y-%m-%d %H:%M:%S} UTC" for s in new
        )
        await rt.note(
            incident_id,
            "reviews_scheduled",
            f"review reminders scheduled: {listed}",
            actor=ACTOR,
            data={"runs": [s.model_dump(mode="json") for s in new]},
        )
    return out


def _scheduled(run: ReviewRun, *, created: bool) -> ScheduledReview:
    return ScheduledReview(
        review_key=run.review_key,
        scheduled_for=run.scheduled_for,
        flow_run_id=run.flow_run_id,
        created=created,
    )


async def cancel_review_runs(
    ledger: Ledger, incident_id: int, *, keep: str | None = None
) -> list[str]:
    """Cancel the incident's review runs that are still scheduled in Prefect (not ``keep``).

    Returns:
        The review keys whose runs were cancelled (a run already running or finished is left alone).
    """
    cancelled: list[str] = []
    runs = await asyncio.to_thread(ledger.review_runs, incident_id)
    pending = [
        r for r in runs if r.state == "scheduled" and r.flow_run_id and r.flow_run_id != keep
    ]
    if not pending:
        return cancelled
    async with get_client() as client:
        for r in pending:
            assert r.flow_run_id is not None
            try:
                fr = await client.read_flow_run(UUID(r.flow_run_id))
            except ObjectNotFound:
                continue
            if fr.state is None or not (fr.state.is_scheduled() or fr.state.is_pending()):
                continue
            await client.set_flow_run_state(
                fr.id,
                Cancelled(message=f"INC-{incident_id}: every review item is done"),
                force=True,
            )
            await asyncio.to_thread(
                ledger.set_review_run_state, incident_id, r.review_key, "cancelled"
            )
            cancelled.append(r.review_key)
    return cancelled


async def _remind(rt: Runtime, inc: Incident, decision: ReviewDecision) -> list[str]:
    """Slack and email the reminder, and escalate each overdue action item; returns what was sent."""
    sent: list[str] = []
    ctx = ctx_for(rt, inc.id)
    text = reminder_text(inc, decision)
    slack = rt.systems.get("slack")
    email = rt.systems.get("email")
    to = rt.policy.routing.team_email_to
    key = decision.review_key
    if slack is None:
        await rt.note(inc.id, "skipped", f"review reminder on Slack: {rt.systems.hint('slack')}")
    else:
        await post_slack_message(ctx, slack, f"review-{key}", f":memo: {text}")
        sent.append("slack")
    if email is not None and to:
        subject = f"{inc.key} post-incident review {key}: {len(decision.open)} item(s) open"
        if decision.overdue:
            subject += f", {len(decision.overdue)} action item(s) overdue"
        await send_email(
            ctx, email, f"review-{key}", rt.policy.routing.email_sender, to, subject, text
        )
        sent.append("email")
    for esc in decision.overdue:
        await rt.note(
            inc.id,
            "escalation",
            f"{inc.key} {esc.message}",
            actor=ACTOR,
            data={
                "kind": "action_item_overdue",
                "action_item_id": esc.item.id,
                "owner": esc.item.owner,
                "role": esc.to.role,
                "contact": esc.to.contact,
                "review": key,
            },
        )
        if slack is not None:
            await post_slack_message(
                ctx,
                slack,
                f"review-{key}-overdue-{esc.item.id}",
                f":rotating_light: {inc.key} {esc.message}",
            )
            sent.append(f"escalation:{esc.item.id}")
    return sent


def _run_name() -> str:
    params = flow_run.parameters
    what = params.get("review") or "tick"
    return f"INC-{params.get('incident_id')} review {what}"


@flow(name="review", flow_run_name=_run_name)
async def review(
    incident_id: int,
    review: str | None = None,
    done: list[str] | None = None,
    by: str = "",
    options: Options | None = None,
) -> dict[str, Any]:
    """Remind about a post-incident review's open items, or tick items off.

    Args:
        incident_id: the incident (the number in INC-42).
        review: which review reminds now: 24h, 48h or 1w (the policy's keys); the scheduled runs
            set it.
        done: checklist items to tick off instead of reminding (e.g. postmortem, rca_drafted, or
            48h.postmortem); given, the run reminds nobody.
        by: who ticks them off (for the timeline).
        options: ledger URL, policy file, block names, speed.

    Returns:
        What happened: the open items, the overdue escalations, what was sent, what was cancelled.

    Raises:
        ValueError: neither review nor done, an unknown review, or an unknown checklist key (the
            message lists the known ones).
        LedgerPermanentError: no such incident.
    """
    options = options or Options()
    rt = await build_runtime(options)
    if review is None and not done:
        keys = ", ".join(r.key for r in rt.policy.reviews)
        raise ValueError(f"give review (one of {keys}) to remind, or done (checklist keys) to tick")
    if review is not None:
        check_review_key(rt.policy, review)
    pairs = resolve_done(rt.policy, done or [])  # unknown keys fail here, before any change
    inc = await rt.incident(incident_id)
    out: dict[str, Any] = {"incident_id": incident_id, "review": review}
    ledger = rt.ledger
    if pairs:
        await asyncio.to_thread(ledger.tick_review_items, incident_id, pairs, by or "prefect-ui")
        ticked = ", ".join(f"{r}.{i}" for r, i in pairs)
        await rt.note(
            incident_id,
            "review_items_done",
            f"review items done: {ticked}" + (f" (by {by})" if by else ""),
            actor=by or "prefect-ui",
            data={"items": [f"{r}.{i}" for r, i in pairs]},
        )
        out["ticked"] = [f"{r}.{i}" for r, i in pairs]
    done_items, action_items = await asyncio.gather(
        asyncio.to_thread(ledger.review_items_done, incident_id),
        asyncio.to_thread(ledger.action_items, incident_id),
    )
    key = review or rt.policy.reviews[0].key
    decision = decide_review(rt.policy, key, done_pairs(done_items), action_items, rt.now())
    if review is not None and not done:
        sent = await _remind(rt, inc, decision) if decision.sends else []
        state: ReviewRunState = "reminded" if decision.sends else "quiet"
        with contextlib.suppress(LedgerPermanentError):  # a run started by hand has no record
            await asyncio.to_thread(ledger.set_review_run_state, incident_id, review, state)
        if not decision.sends:
            await rt.note(
                incident_id, "review", f"review {review}: nothing open, nothing sent", actor=ACTOR
            )
        out |= {
            "open": [i.key for i in decision.open],
            "overdue": [e.item.id for e in decision.overdue],
            "sent": sent,
        }
    out["everything_done"] = decision.everything_done
    out["cancelled"] = []
    if decision.cancel_the_rest:
        current = str(flow_run.id) if flow_run.id else None
        try:
            out["cancelled"] = await cancel_review_runs(ledger, incident_id, keep=current)
        except (RunbookError, OSError) as exc:
            _log().warning("INC-%s: remaining review runs not cancelled: %s", incident_id, exc)
        if out["cancelled"]:
            await rt.note(
                incident_id,
                "reviews_cancelled",
                "every review item is done: cancelled the review runs "
                + ", ".join(out["cancelled"]),
                actor=ACTOR,
            )
    return out
