"""The watcher, deployed to run every minute. Each run:

1. escalates SLA deadlines that passed while no process was watching (a dead worker), and incidents
   open past 2x their estimate. The deadlines live in the ledger, so this works no matter which
   process ran (or stopped running) the incident; each escalation is marked on its deadline, so a
   later run never repeats it;
2. launches again each open incident whose flow run crashed (its worker died and the heartbeat
   automation marked it; ``flows.recovery``), at most three times per incident;
3. reads the app's metrics once and compares them with the policy's thresholds: breached metrics are
   recorded as firing alerts through ``Ledger.record_alerts`` (the gateway's path: same dedup, an
   outbox row when an incident opens), then the outbox is drained once so the incident flow starts
   even when no gateway runs. A source that cannot be read is itself a P3 incident. An incident the
   watcher opened is resolved once every metric it fired for has read healthy for the policy's
   ``monitoring.auto_resolve_after`` (compressed by ``speed``); see ``runbook.watching``;
4. keeps each edge function's source while it is healthy (the edge-timeouts playbook redeploys it).
"""

from __future__ import annotations

import asyncio
import importlib.util
from typing import Any

from prefect import flow
from prefect.logging import get_run_logger

from blocks import AppEndpoint
from flows.common import send_escalation
from flows.recovery import recover_crashed
from flows.runtime import Options, Runtime, build_runtime, compress
from runbook.errors import InvalidTransition, LedgerPermanentError, RunbookError
from runbook.gateway.dispatcher import INCIDENT_DEPLOYMENT, Dispatcher, PrefectLauncher
from runbook.models import Incident, Phase
from runbook.policy import format_duration
from runbook.sla import breach_reason, check_overrun, escalate
from runbook.watching import (
    WATCH_SOURCE,
    Decision,
    Observation,
    WatchState,
    check_service,
    decide,
    firing_intakes,
    incident_dedup_key,
    observe,
    path_to_resolved,
    resolved_alerts,
    source_dedup_key,
    unreachable,
    watch_state,
)
from tasks.metrics import measure_metrics
from tasks.supabase import snapshot_functions

WATCH_WINDOW_S = 30.0
# the next watch run is the retry: a source that does not answer now is reported now
read_metrics = measure_metrics.with_options(name="read-watch-metrics", retries=0)


@flow(name="watch", flow_run_name="watch")
async def watch(options: Options | None = None, service: str = "web") -> dict[str, Any]:
    """Escalate missed deadlines and overruns; open, attach and resolve threshold incidents.

    Args:
        options: policy, ledger and block names (speed compresses the overrun estimate, the
            metrics window and the auto-resolve window in drills and tests).
        service: the name the app's metrics are reported under (labels and dedup key), e.g. web.

    Returns:
        {"escalated": [{"incident_id", "phase"|"kind", "reason"}], "relaunched": [{"incident_id",
        "relaunched", "reason", "attempt"}] (open incidents whose run crashed: ``flows.recovery``),
        "thresholds": {...} (see
        ``watch_thresholds``), "snapshots": {...}}

    Raises:
        ValueError: ``service`` is not a valid name (nothing was read or changed).
    """
    service = check_service(service)
    options = options or Options()
    rt = await build_runtime(options)
    escalated = await escalate_missed(rt)
    relaunched = await relaunch_crashed(rt)
    thresholds = await watch_thresholds(rt, options, service)
    snapshots: dict[str, Any] = {}
    supa = rt.systems.get("supabase")
    if supa is not None:
        # keep each edge function's source while it is healthy: the edge-timeouts playbook redeploys it
        try:
            snapshots = await snapshot_functions(supa, options.ledger_url)
        except RunbookError as exc:
            get_run_logger().warning("could not snapshot edge functions: %s", exc)
    return {
        "escalated": escalated,
        "relaunched": relaunched,
        "thresholds": thresholds,
        "snapshots": snapshots,
    }


async def relaunch_crashed(rt: Runtime) -> list[dict[str, Any]]:
    """Launch again the open incidents whose flow run crashed (``flows.recovery``); Prefect's
    answer failing here is logged, and the next watch run looks again."""
    try:
        return await recover_crashed(rt, PrefectLauncher(), rt.policy.recovery.max_relaunches)
    except Exception as exc:  # noqa: BLE001 - the rest of the watch still runs
        get_run_logger().warning(
            "could not check for crashed incident runs (%s: %s); the next watch run looks again",
            type(exc).__name__,
            exc,
        )
        return []


async def escalate_missed(rt: Runtime) -> list[dict[str, Any]]:
    """Escalate every missed, unescalated phase deadline of an open incident, and overruns."""
    now = rt.now()
    escalated: list[dict[str, Any]] = []
    for due in await asyncio.to_thread(rt.ledger.due_deadlines, now):
        inc = await rt.incident(due.incident_id)
        phase = Phase(due.phase)
        reason = (
            breach_reason(phase, due.due_at, now)
            + " (found by the watcher: no process reported it)"
        )
        await send_escalation(rt, inc, escalate(rt.policy, inc, "sla_breach", reason), phase)
        await asyncio.to_thread(rt.ledger.mark_deadline, inc.id, due.phase, escalated_at=now)
        escalated.append({"incident_id": inc.id, "phase": due.phase, "reason": reason})
    for inc in await asyncio.to_thread(rt.ledger.list_incidents, open_only=True):
        clock_now = inc.detected_at + (now - inc.detected_at) * rt.speed
        overrun = check_overrun(rt.policy, inc, clock_now)
        already = any(
            e.kind == "escalation" and e.data.get("kind") == "resolution_overrun"
            for e in await asyncio.to_thread(rt.ledger.timeline, inc.id)
        )
        if overrun is not None and not already:
            await send_escalation(rt, inc, overrun, None)
            escalated.append(
                {"incident_id": inc.id, "kind": "resolution_overrun", "reason": overrun.reason}
            )
    return escalated


async def watch_thresholds(rt: Runtime, options: Options, service: str) -> dict[str, Any]:
    """Read the metrics once; fire, launch, and resolve what has been healthy long enough.

    Returns:
        {"service", "watched", "unreachable" (why, or None), "observed" {metric: {value, level}},
        "breached" [metrics], "opened" [ids], "attached" [ids], "launches" {launched, failed},
        "decisions" [{incident_id, verdict, reason}], "resolved" [ids]}
    """
    log = get_run_logger()
    app: AppEndpoint | None = rt.systems.get("app")
    if app is None and not options.systems.app:
        log.info("thresholds not watched: the app system is switched off (systems.app is empty)")
        return {"service": service, "watched": False}
    obs = await _observe(rt, app, service)
    outcomes = await asyncio.to_thread(rt.ledger.record_alerts, firing_intakes(rt.policy, obs))
    opened = sorted({o.incident_id for o in outcomes if o.opened and o.incident_id is not None})
    attached = sorted({o.incident_id for o in outcomes if o.attached and o.incident_id is not None})
    if obs.error is not None:
        log.warning("monitoring source of %s unreachable (reported as P3): %s", service, obs.error)
    for incident_id in opened:
        log.warning("INC-%s opened by the threshold watcher", incident_id)
    launches = await _launch(rt)
    decisions, resolved = await _settle(rt, obs, service)
    return {
        "service": service,
        "watched": True,
        "unreachable": obs.error,
        "observed": {f.metric: {"value": f.value, "level": f.level} for f in obs.findings},
        "breached": [f.metric for f in obs.breached],
        "opened": opened,
        "attached": attached,
        "launches": launches,
        "decisions": decisions,
        "resolved": resolved,
    }


async def _observe(rt: Runtime, app: AppEndpoint | None, service: str) -> Observation:
    if app is None:
        return unreachable(service, rt.now(), rt.systems.hint("app"))
    try:
        readings = await read_metrics(app, max(0.3, WATCH_WINDOW_S / rt.speed))
    except (RunbookError, TimeoutError) as exc:
        return unreachable(service, rt.now(), f"{type(exc).__name__}: {exc}")
    return observe(rt.policy, service, readings, rt.now())


async def _launch(rt: Runtime) -> dict[str, int]:
    """Drain the outbox once, as the gateway's dispatcher does; failed launches stay queued."""
    dispatcher = Dispatcher(rt.ledger)
    try:
        launched = await dispatcher.drain_once()
    finally:
        await dispatcher.stop()
    if dispatcher.failures:
        get_run_logger().warning(
            "%d incident launch(es) failed and stay in the outbox for the next watch run or the "
            "gateway's dispatcher; check that the %s deployment exists",
            dispatcher.failures,
            INCIDENT_DEPLOYMENT,
        )
    return {"launched": launched, "failed": dispatcher.failures}


async def _settle(
    rt: Runtime, obs: Observation, service: str
) -> tuple[list[dict[str, Any]], list[int]]:
    """Decide, for each open incident the watcher opened for ``service``, whether it resolves."""
    window = compress(rt.policy.monitoring.auto_resolve_after, rt.speed)
    keys = {incident_dedup_key(service), source_dedup_key(service)}
    decisions: list[dict[str, Any]] = []
    resolved: list[int] = []
    for inc in await asyncio.to_thread(rt.ledger.list_incidents, open_only=True):
        if inc.dedup_key not in keys:
            continue
        alerts = await asyncio.to_thread(rt.ledger.alerts_for, inc.id)
        events = await asyncio.to_thread(rt.ledger.timeline, inc.id)
        state = watch_state(alerts, events)
        decision = decide(state, obs, rt.now(), window)
        if decision.mark is not None:
            since = decision.healthy_since.isoformat() if decision.healthy_since else None
            await rt.note(
                inc.id, decision.mark, decision.reason, actor=WATCH_SOURCE,
                data={"metrics": sorted(state.metrics), "healthy_since": since},
            )  # fmt: skip
        decisions.append(
            {"incident_id": inc.id, "verdict": decision.verdict, "reason": decision.reason}
        )
        if decision.verdict == "resolve" and await _resolve(rt, inc, state, obs, decision):
            resolved.append(inc.id)
    return decisions, resolved


async def _resolve(
    rt: Runtime, inc: Incident, state: WatchState, obs: Observation, decision: Decision
) -> bool:
    log = get_run_logger()
    path = path_to_resolved(inc.status)
    if not path:
        await rt.note(
            inc.id, "note", f"healthy long enough to resolve, but its status {inc.status.value} "
            "allows no path to resolved: left for a person", actor=WATCH_SOURCE,
        )  # fmt: skip
        return False
    after = format_duration(rt.policy.monitoring.auto_resolve_after)
    reason = f"auto-resolved by the watcher: {decision.reason} (policy auto_resolve_after {after}"
    reason += f", {rt.speed:g}x)" if rt.speed != 1 else ")"
    # resolved alerts first: they attach by dedup key only while the incident is still open
    resolved = resolved_alerts(obs, inc.dedup_key, state.metrics, decision.reason)
    await asyncio.to_thread(rt.ledger.record_alerts, resolved)
    try:
        for step in path:
            await asyncio.to_thread(
                rt.ledger.transition, inc.id, step, actor=WATCH_SOURCE, reason=reason
            )
    except (InvalidTransition, LedgerPermanentError) as exc:
        # the incident flow (or a person) moved it meanwhile: theirs is the word
        log.warning("INC-%s not auto-resolved: %s", inc.id, exc)
        return False
    log.info("INC-%s resolved: %s", inc.id, reason)
    await _schedule_reviews(rt, inc.id)
    return True


async def _schedule_reviews(rt: Runtime, incident_id: int) -> None:
    """Schedule the post-incident review runs, where flows.reviews is part of this install."""
    log = get_run_logger()
    if importlib.util.find_spec("flows.reviews") is None:
        log.info(
            "INC-%s: no review reminders scheduled (flows.reviews is not installed)", incident_id
        )
        return
    from flows.reviews import schedule_reviews  # type: ignore[import-not-found,unused-ignore]

    try:
        await schedule_reviews(rt, incident_id)
    except Exception as exc:  # noqa: BLE001 - the incident is resolved; a reminder failure must show, not undo it
        reason = f"review reminders could not be scheduled: {type(exc).__name__}: {exc}"
        log.warning("INC-%s %s", incident_id, reason)
        await rt.note(incident_id, "note", reason, actor=WATCH_SOURCE)
