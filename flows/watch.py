"""The watcher: catches SLA deadlines that passed while no process was watching (a dead worker), and
incidents open past 2x their estimate, and escalates them. Deployed to run every minute.

The deadlines live in the ledger, so this works no matter which process ran (or stopped running) the
incident. Each escalation is marked on its deadline, so a later watch run never repeats it.
"""

from __future__ import annotations

import asyncio
from typing import Any

from prefect import flow
from prefect.logging import get_run_logger

from flows.common import send_escalation
from flows.runtime import Options, build_runtime
from runbook.errors import RunbookError
from runbook.models import Phase
from runbook.sla import breach_reason, check_overrun, escalate
from tasks.supabase import snapshot_functions


@flow(name="watch", flow_run_name="watch")
async def watch(options: Options | None = None) -> dict[str, Any]:
    """Escalate every missed, unescalated phase deadline of an open incident, and resolution overruns.

    Args:
        options: policy, ledger and block names (speed compresses the overrun estimate in drills).

    Returns:
        {"escalated": [{"incident_id", "phase"|"kind", "reason"}]}
    """
    options = options or Options()
    rt = await build_runtime(options)
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
    snapshots: dict[str, Any] = {}
    supa = rt.systems.get("supabase")
    if supa is not None:
        # keep each edge function's source while it is healthy: the edge-timeouts playbook redeploys it
        try:
            snapshots = await snapshot_functions(supa, options.ledger_url)
        except RunbookError as exc:
            get_run_logger().warning("could not snapshot edge functions: %s", exc)
    return {"escalated": escalated, "snapshots": snapshots}
