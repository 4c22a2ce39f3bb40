"""Incidents whose flow run died: which to launch again. Pure: the watcher reads, this decides.

A worker that dies (machine lost, process killed) leaves its flow runs Running in Prefect; nothing in
Prefect's open-source server notices. Flow runs send heartbeats (``PREFECT_FLOWS_HEARTBEAT_FREQUENCY``;
``runbook worker`` and ``runbook serve`` set 30 s), and an automation on the server
(``flows/recovery.py``, created by those commands) marks a run of ours ``Crashed`` when its heartbeats
stop for three periods. The watcher then finds open incidents whose last run crashed and launches the
incident flow again: it picks up where the ledger says the incident is (every side effect is recorded
under its idempotency key, so nothing is done twice).

Launch keys: the gateway's first launch is ``incident-<id>``; relaunch ``n`` is
``incident-<id>-relaunch-<n>``, so two watchers deciding at once create one run (Prefect's idempotency
key), and the attempt number is read back from the key. After the policy's ``[recovery]
max_relaunches`` relaunches (``MAX_RELAUNCHES``, 3, by default; 0: none) crashed too, the incident is
left to people (the missed deadlines are escalated by the watcher anyway) with a timeline note saying so.
A run that ended Completed, Failed or Cancelled is not relaunched: the flow or a person ended it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

MAX_RELAUNCHES = 3
#: the most relaunches a policy may allow; the watcher looks up this many keys whatever the limit of
#: the moment, so a run launched under a higher limit is still seen (live: nothing is launched)
RELAUNCH_CEILING = 10

#: a run in one of these states is still the incident's run (or about to be)
LIVE_STATES = frozenset({"SCHEDULED", "PENDING", "RUNNING", "PAUSED", "CANCELLING"})

_KEY = re.compile(r"^incident-(\d+)(?:-relaunch-(\d+))?$")


def launch_key(incident_id: int, attempt: int = 0) -> str:
    """The idempotency key of an incident's launch: attempt 0 is the gateway's."""
    return (
        f"incident-{incident_id}" if attempt == 0 else f"incident-{incident_id}-relaunch-{attempt}"
    )


def launch_keys(incident_id: int, limit: int = MAX_RELAUNCHES) -> list[str]:
    """Every key an incident's runs can have: the first launch and each relaunch."""
    return [launch_key(incident_id, n) for n in range(limit + 1)]


def parse_key(key: str | None) -> tuple[int, int] | None:
    """``(incident_id, attempt)`` from a launch key; None for any other key."""
    m = _KEY.match(key or "")
    return (int(m.group(1)), int(m.group(2) or 0)) if m else None


@dataclass(frozen=True)
class RunView:
    """What the decision needs of one of the incident's flow runs."""

    id: str
    key: str
    state_type: str  # Prefect's StateType name: RUNNING, CRASHED ...
    state_name: str = ""


@dataclass(frozen=True)
class Relaunch:
    """The decision for one incident: ``attempt`` to launch (None: nothing to do) and why."""

    incident_id: int
    attempt: int | None
    reason: str
    crashed_run: str | None = None
    given_up: bool = False


def _times(n: int) -> str:
    return "once" if n == 1 else f"{n} times"


def decide(
    incident_id: int,
    runs: Sequence[RunView],
    limit: int = MAX_RELAUNCHES,
    *,
    quiet_s: float | None = None,
    quiet_for_s: float = 0.0,
) -> Relaunch:
    """Whether to launch the incident flow again, from the incident's runs (any order).

    ``quiet_s`` is how long ago the ledger last heard from the incident (its newest timeline event);
    a crashed run is relaunched only once that is at least ``quiet_for_s`` (the automation's window):
    a run marked Crashed while it still writes (heartbeats delayed on an overloaded server) is alive,
    and a second run of the same incident is not started next to it.
    """
    mine = [
        (parsed[1], r) for r in runs if (parsed := parse_key(r.key)) and parsed[0] == incident_id
    ]
    if not mine:
        return Relaunch(
            incident_id, None, "no launched run found (the gateway's outbox launches it)"
        )
    live = [r for _, r in mine if r.state_type in LIVE_STATES]
    if live:
        return Relaunch(incident_id, None, f"run {live[0].id} is {live[0].state_type.lower()}")
    attempt, last = max(mine, key=lambda m: m[0])
    if last.state_type != "CRASHED":
        ended = last.state_name or last.state_type.title()
        return Relaunch(incident_id, None, f"its last run ended {ended}: not relaunched")
    if attempt >= limit:
        return Relaunch(
            incident_id,
            None,
            f"its run crashed {_times(attempt + 1)} (the policy's recovery.max_relaunches is "
            f"{limit}); not launched again: run the incident flow by hand once the cause is fixed",
            crashed_run=last.id,
            given_up=True,
        )
    if quiet_s is not None and quiet_s < quiet_for_s:
        return Relaunch(
            incident_id,
            None,
            f"run {last.id} is marked crashed, but the ledger heard from the incident {quiet_s:.0f} s "
            f"ago (under {quiet_for_s:.0f} s): it may be alive; looked at again next time",
        )
    return Relaunch(
        incident_id,
        attempt + 1,
        f"run {last.id} crashed ({last.state_name or 'Crashed'}); relaunch {attempt + 1} of {limit}",
        crashed_run=last.id,
    )
