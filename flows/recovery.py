"""Incident runs that died with their worker: marked Crashed by heartbeat, then launched again.

Two parts (the decisions are ``runbook.recovery``'s):

1. **The heartbeat automation.** Prefect 3.9's flow runs send a ``prefect.flow-run.heartbeat`` event
   every ``PREFECT_FLOWS_HEARTBEAT_FREQUENCY`` seconds while their process lives (paused ones too:
   the beat is a thread of the process). ``runbook worker`` and ``runbook serve`` set 30 s for the
   runs they start (a value in the environment wins) and make sure the server has the automation
   ``AUTOMATION_NAME``: a run tagged ``runbook`` whose heartbeats stop for ``MISSED_BEATS`` periods
   without a final state is set ``Crashed`` (Prefect's documented way to detect "zombie" runs; its
   open-source server has no built-in one). Other flows on a shared server are not matched.
2. **The watcher's relaunch** (``recover_crashed``, every watch run): for each open incident, its
   runs are read by their launch keys; one whose last run crashed is launched again under the next
   key, and a timeline note says which run crashed and which attempt this is.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, MutableMapping
from datetime import timedelta
from typing import Any

from runbook.clock import utcnow
from runbook.recovery import MAX_RELAUNCHES, RELAUNCH_CEILING, RunView, decide, launch_keys

AUTOMATION_NAME = "runbook: crash incident runs whose heartbeats stop"
HEARTBEAT_ENV = "PREFECT_FLOWS_HEARTBEAT_FREQUENCY"
HEARTBEAT_S = 30  # Prefect's minimum; its default is 180
MISSED_BEATS = 3
RUN_TAG = "runbook"  # every deployment of ours has it (prefect.yaml, flows/serve.py)
KEYS_PER_READ = 200  # the server's default page size

Relauncher = Callable[..., Awaitable[None]]


def heartbeat_env(environ: MutableMapping[str, str]) -> int:
    """Set ``HEARTBEAT_S`` in ``environ`` unless it sets a frequency already; the frequency in use.

    Raises:
        ValueError: the environment's value is not a whole number of seconds of at least 30.
    """
    value = environ.setdefault(HEARTBEAT_ENV, str(HEARTBEAT_S))
    try:
        seconds = int(value)
    except ValueError:
        raise ValueError(f"{HEARTBEAT_ENV}={value!r}: give whole seconds, at least 30") from None
    if seconds < 30:
        raise ValueError(f"{HEARTBEAT_ENV}={value!r}: Prefect accepts 30 seconds or more")
    return seconds


def zombie_automation(frequency_s: int) -> Any:
    """The automation: a ``runbook`` run silent for ``MISSED_BEATS`` heartbeats is set Crashed."""
    from prefect.automations import Automation
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import EventTrigger, Posture
    from prefect.events.schemas.events import ResourceSpecification

    within = timedelta(seconds=frequency_s * MISSED_BEATS)
    return Automation(
        name=AUTOMATION_NAME,
        description=(
            f"Created by runbook worker/serve. A flow run tagged {RUN_TAG!r} that sends no "
            f"heartbeat for {within.total_seconds():.0f} s (its process or machine died) is set "
            "Crashed; the watch flow then launches the incident flow again."
        ),
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat"},
            expect={
                "prefect.flow-run.heartbeat",
                "prefect.flow-run.Completed",
                "prefect.flow-run.Failed",
                "prefect.flow-run.Cancelled",
                "prefect.flow-run.Crashed",
            },
            match=ResourceSpecification({"prefect.resource.id": ["prefect.flow-run.*"]}),
            match_related=ResourceSpecification(
                {"prefect.resource.role": "tag", "prefect.resource.id": f"prefect.tag.{RUN_TAG}"}
            ),
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=within,
        ),
        actions=[
            ChangeFlowRunState(
                state=StateType.CRASHED,
                message=f"no heartbeat for {within.total_seconds():.0f} s: its process is gone",
            )
        ],
    )


async def ensure_zombie_automation(frequency_s: int) -> str:
    """Create the automation, or bring its window in line with ``frequency_s``: "created",
    "updated" or "present". Raises what Prefect's client raises (e.g. the API is unreachable)."""
    from prefect.automations import Automation

    wanted = zombie_automation(frequency_s)
    try:
        existing = await Automation.aread(name=AUTOMATION_NAME)
    except ValueError:  # not found
        await wanted.acreate()
        return "created"
    if existing.trigger == wanted.trigger and existing.actions == wanted.actions:
        return "present"
    existing.trigger, existing.actions = wanted.trigger, wanted.actions
    existing.description = wanted.description
    await existing.aupdate()
    return "updated"


def prepare_heartbeats(environ: MutableMapping[str, str] | None = None) -> str:
    """For ``runbook worker`` and ``runbook serve``: heartbeats every 30 s for the runs they start,
    and the automation on the server; one line saying what was done. A server that cannot be
    reached is not fatal here (the command then fails on it with Prefect's own message): the line
    says the automation is missing.

    Raises:
        ValueError: the environment's heartbeat frequency is not valid (nothing was changed).
    """
    environ = os.environ if environ is None else environ
    frequency = heartbeat_env(environ)
    try:
        outcome = asyncio.run(ensure_zombie_automation(frequency))
    except Exception as exc:  # noqa: BLE001 - reported, and the worker still starts
        return (
            f"warning: could not create the automation {AUTOMATION_NAME!r} "
            f"({type(exc).__name__}: {exc}); until it exists, runs of a worker that dies stay "
            "Running; the next runbook worker or serve creates it"
        )
    return f"automation {AUTOMATION_NAME!r} {outcome}; runs send a heartbeat every {frequency} s"


def automation_window_s() -> float:
    """How long a run must be silent before it is called dead: ``MISSED_BEATS`` heartbeat periods
    of this process's setting (the watch run's worker sets it as it does for every run)."""
    from prefect.settings import get_current_settings

    return float(get_current_settings().flows.heartbeat_frequency or HEARTBEAT_S) * MISSED_BEATS


async def incident_runs(incident_ids: list[int], limit: int = MAX_RELAUNCHES) -> list[RunView]:
    """The flow runs launched for these incidents (by their launch keys)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterIdempotencyKey

    keys = [k for i in incident_ids for k in launch_keys(i, limit)]
    views: list[RunView] = []
    async with get_client() as client:
        for start in range(0, len(keys), KEYS_PER_READ):
            chunk = keys[start : start + KEYS_PER_READ]
            runs = await client.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    idempotency_key=FlowRunFilterIdempotencyKey(any_=chunk)
                ),
                limit=len(chunk),
            )
            views += [
                RunView(
                    id=str(r.id),
                    key=r.idempotency_key or "",
                    state_type=r.state.type.value if r.state else "PENDING",
                    state_name=(r.state.name or "") if r.state else "",
                )
                for r in runs
            ]
    return views


async def recover_crashed(
    rt: Any, relaunch: Relauncher, limit: int = MAX_RELAUNCHES
) -> list[dict[str, Any]]:
    """Launch again each open incident whose last run crashed; what was done, per incident.

    ``rt`` is the watch run's ``flows.runtime.Runtime``; ``relaunch(incident_id, attempt=n)`` creates
    the run (``PrefectLauncher``). A relaunch that fails is reported and tried again by the next
    watch run (the decision is made again from Prefect's runs).
    """
    incidents = await asyncio.to_thread(rt.ledger.list_incidents, open_only=True)
    if not incidents:
        return []
    # every key a policy could have allowed: a run launched under a higher limit than today's is
    # still seen (a live one means nothing is launched)
    looked_up = max(limit, RELAUNCH_CEILING)
    runs = await incident_runs([i.id for i in incidents], looked_up)
    quiet_for = automation_window_s()
    done: list[dict[str, Any]] = []
    for inc in incidents:
        keys = set(launch_keys(inc.id, looked_up))
        events: list[Any] = []  # read once, only for an incident with a crashed run
        if any(r.state_type == "CRASHED" and r.key in keys for r in runs):
            events = await asyncio.to_thread(rt.ledger.timeline, inc.id)
        quiet = (utcnow() - max(e.at for e in events)).total_seconds() if events else None
        d = decide(inc.id, runs, limit, quiet_s=quiet, quiet_for_s=quiet_for)
        if d.attempt is not None:
            try:
                await relaunch(inc.id, attempt=d.attempt)
            except Exception as exc:  # noqa: BLE001 - the next watch run tries again
                done.append({"incident_id": inc.id, "relaunched": False, "reason": f"{d.reason}; "
                             f"the launch failed ({type(exc).__name__}: {exc}), next watch run retries"})  # fmt: skip
                continue
            await rt.note(
                inc.id,
                "relaunched",
                d.reason,
                data={"crashed_run": d.crashed_run, "attempt": d.attempt},
                actor="watch",
            )
            done.append({"incident_id": inc.id, "relaunched": True, "attempt": d.attempt,
                         "reason": d.reason})  # fmt: skip
        elif d.given_up:  # its last run crashed: ``events`` were read above
            if not any(
                e.kind == "relaunch_abandoned" and e.data.get("crashed_run") == d.crashed_run
                for e in events
            ):
                await rt.note(
                    inc.id, "relaunch_abandoned", d.reason,
                    data={"crashed_run": d.crashed_run}, actor="watch",
                )  # fmt: skip
            done.append({"incident_id": inc.id, "relaunched": False, "reason": d.reason})
    return done
