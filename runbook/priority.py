"""Mitigation first: once its incident is mitigated, a run's process yields the CPU to the others.

In an alert storm every incident's run shares the workers' cores. After an incident is mitigated
its run still has the communicate and rca phases to do (status updates, the RCA and its chart),
while other incidents are still waiting for their mitigation, the figure the runbook's SLAs are
about. So the incident flow, when it runs alone in a process started for it (a worker's or
``runbook serve``'s run), raises that process's niceness by ``RUNBOOK_AFTER_MITIGATION_NICE``
(default 10) once its incident is mitigated: on a busy machine the kernel then gives the remaining
phases the CPU that runs still mitigating leave; on an idle one nothing changes. A run inside
another process (``runbook drill``, a test) never touches the niceness of the process it shares.
0 turns this off. ``runbook worker`` and ``runbook serve`` refuse to start with a value outside
0-19; a run that meets one anyway keeps its priority and says why in its log (an incident's
response never fails over a tuning knob).

``RUNBOOK_RUN_NICE`` (0-19, default 0) is the other knob: the niceness a ``runbook worker``'s runs
start at (``runbook.forkrun.lower_priority`` applies it), for a machine the runs share with the
Prefect server. The two add up, to Linux's ceiling of 19.

Pure decisions here; ``flows.incident`` applies them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from runbook.envvars import whole_number
from runbook.errors import ConfigError
from runbook.forkrun import ENV_RUN_NICE, MAX_NICE

ENV_NICE = "RUNBOOK_AFTER_MITIGATION_NICE"
DEFAULT_NICE = 10
#: set by Prefect's workers and runners in the environment of a process started for one flow run
ENV_FLOW_RUN_ID = "PREFECT__FLOW_RUN_ID"


def after_mitigation_nice(env: Mapping[str, str] | None = None) -> int:
    """How much a run's process lowers its priority after mitigation (0: not at all).

    Raises:
        ConfigError: the variable is not a whole number from 0 to 19.
    """
    return whole_number(
        os.environ if env is None else env, ENV_NICE, DEFAULT_NICE, 0, MAX_NICE, least_is_off=True
    )


def run_nice(env: Mapping[str, str] | None = None) -> int:
    """The niceness a ``runbook worker``'s runs start at (0: the worker's own).

    Raises:
        ConfigError: ``RUNBOOK_RUN_NICE`` is not a whole number from 0 to 19.
    """
    return whole_number(
        os.environ if env is None else env, ENV_RUN_NICE, 0, 0, MAX_NICE, least_is_off=True
    )


def configured_nice(env: Mapping[str, str] | None = None) -> tuple[int, str | None]:
    """For a run already under way: the increment, or 0 and why when the variable is wrong (the
    incident's response goes on at full priority; ``runbook worker`` and ``runbook serve`` refuse
    to start with such a value, so only a process started otherwise meets it here)."""
    try:
        return after_mitigation_nice(env), None
    except ConfigError as exc:
        return 0, f"{exc}; this run keeps its priority"


def nice_after_mitigation(
    increment: int, mitigated: bool, run_id: str | None, env: Mapping[str, str] | None = None
) -> int:
    """The niceness increment to apply now: ``increment`` when the incident was mitigated and this
    process was started for run ``run_id`` alone (its environment names that run), else 0."""
    env = os.environ if env is None else env
    own_process = run_id is not None and env.get(ENV_FLOW_RUN_ID) == run_id
    return increment if increment > 0 and mitigated and own_process else 0
