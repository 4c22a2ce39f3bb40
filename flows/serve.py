"""Serve every deployment of the runbook from one process, no work pool needed (`runbook serve`).

The deployments are the same nine that prefect.yaml declares, under the same names
(``<flow-name>/runbook``), so the alert gateway launches ``incident-response/runbook`` whichever way they
are run. Serving takes over a deployment of that name that ``prefect deploy`` created: it keeps its id
(and run history), its description, tags, parameter schema and schedule are replaced by these, its
entrypoint becomes a module path, and its work pool and pull steps are cleared, so only this process
runs it. Stopping the server pauses them; `prefect deploy --all` hands them back to the work pool.

The runner polls for scheduled runs every second (Prefect's default is 10 s). Each run executes in its
own subprocess, which first imports the flows, so a run launched by the gateway or the UI is running
about 3 s after it was created on this machine (at most one poll, then the import).
"""

from __future__ import annotations

import inspect
import math
import signal
import threading
from types import FrameType
from typing import TYPE_CHECKING

import httpx

if TYPE_CHECKING:
    from prefect.deployments.runner import RunnerDeployment

DEPLOYMENT_NAME = "runbook"
INCIDENT_DEPLOYMENT = f"incident-response/{DEPLOYMENT_NAME}"
WATCH_CRON = "* * * * *"
DIGEST_CRON = "0 7 * * *"  # the daily summary, 07:00 UTC

DESCRIPTIONS = {
    "incident-response": "Walk one incident through the runbook: detect, triage, mitigate, "
    "communicate, rca. Give an incident_id from the ledger, or declare one (title, service, severity).",
    "detect": "Detect & Alert: confirm, assess severity, ticket, notify, page, war room, status page.",
    "triage": "Triage & Assess: metrics, recent changes, database test, logs, blast radius, "
    "hypothesis.",
    "mitigate": "Mitigate & Stabilize: playbook actions with approvals, verification, recurrence "
    "watch.",
    "communicate": "Communicate & Document: channel, status page, PagerDuty, ticket, close the "
    "incident.",
    "rca": "Root Cause Analysis: the RCA document from the ledger.",
    "watch": "Escalate missed phase deadlines (dead workers) and resolution overruns, every minute.",
    "review": "Post-incident review: remind about open checklist items and overdue action items "
    "(scheduled at +24h/+48h/+1w on resolution), or tick items off with done.",
    "digest": "Daily summary by email: incidents by severity, SLA misses, open action items, "
    "MTTA/MTTR trend.",
}
TAGS = {
    "incident-response": ["runbook", "incident"],
    "watch": ["runbook", "watch"],
    "review": ["runbook", "review"],
    "digest": ["runbook", "digest"],
}
PHASE_TAGS = ["runbook", "phase"]


def build_deployments() -> list[RunnerDeployment]:
    """Build the nine deployments, named ``<flow-name>/runbook`` like the ones in prefect.yaml.

    Returns:
        RunnerDeployments of incident-response, detect, triage, mitigate, communicate, rca, watch
        (on a one-minute cron), review and digest (daily), ready for ``prefect.serve``.
    """
    # imported here so that `import flows.serve` (e.g. by the CLI) stays cheap
    from prefect.deployments.runner import EntrypointType

    from flows.communicate import communicate
    from flows.detect import detect
    from flows.digest import digest
    from flows.incident import incident_response
    from flows.mitigate import mitigate
    from flows.rca import rca
    from flows.reviews import review
    from flows.triage import triage
    from flows.watch import watch

    out: list[RunnerDeployment] = []
    crons = {watch.name: WATCH_CRON, digest.name: DIGEST_CRON}
    every = (incident_response, detect, triage, mitigate, communicate, rca, watch, review, digest)
    for fl in every:
        # _sync: to_deployment would hand back a coroutine when called from async code (tests)
        dep = fl.to_deployment(
            name=DEPLOYMENT_NAME,
            description=DESCRIPTIONS[fl.name],
            tags=TAGS.get(fl.name, PHASE_TAGS),
            cron=crons.get(fl.name),
            # A module entrypoint (flows.incident.incident_response) is imported from the installed
            # package, wherever the runner runs. A file entrypoint would be loaded from the
            # deployment's stored path, which a deployment first made by `prefect deploy` (pull
            # steps, no path) does not have, and serving it crashes every run.
            entrypoint_type=EntrypointType.MODULE_PATH,
            _sync=True,  # type: ignore[call-arg]  # async_dispatch takes it; stubs do not say
        )
        assert not inspect.isawaitable(dep)
        # Marked as set so that re-applying clears a work pool `prefect deploy` gave it (as
        # Flow.serve does): served runs must not also be offered to the pool's workers.
        dep.work_pool_name = None
        dep.work_queue_name = None
        out.append(dep)
    return out


def main(limit: int | None = None, poll_seconds: float = 1.0) -> None:
    """Serve every deployment until SIGINT (Ctrl-C) or SIGTERM, then return normally.

    On SIGTERM Prefect's runner stops polling and cancels the runs it has in flight (marked cancelled,
    not left running); on SIGINT it stops polling. Either way it then pauses the deployments'
    schedules, so no watch runs pile up while nothing serves them; the next start resumes them.

    Args:
        limit: the most flow runs executed at once (Prefect's default, 5, when None).
        poll_seconds: how often the runner asks the server for runs to start.

    Raises:
        ValueError: poll_seconds is not positive.
        RuntimeError: the Prefect API cannot be reached.
    """
    if poll_seconds <= 0:
        raise ValueError(f"poll_seconds must be positive, got {poll_seconds}")
    from prefect import serve
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_RUNNER_POLL_FREQUENCY,
        temporary_settings,
    )

    if threading.current_thread() is threading.main_thread():
        # Until the runner installs its own SIGTERM handler (once started), a SIGTERM while the
        # deployments are applied ends like Ctrl-C instead of killing the process mid-request.
        signal.signal(signal.SIGTERM, _interrupt)
    try:
        deployments = build_deployments()
        # The setting is whole seconds and is read when prefect is first imported, so it is set for
        # this process explicitly; the runner's query_seconds takes the exact (fractional) value.
        with temporary_settings(updates={PREFECT_RUNNER_POLL_FREQUENCY: math.ceil(poll_seconds)}):
            # serve() handles both signals once running: SIGTERM stops the runner through its own
            # handler, SIGINT (KeyboardInterrupt) is caught and logged; either way it returns.
            serve(
                *deployments, limit=limit, query_seconds=poll_seconds, print_starting_message=True
            )
    except KeyboardInterrupt:
        print("runbook serve: interrupted before the runner started; nothing was served")
    except httpx.ConnectError as exc:
        raise RuntimeError(
            f"cannot reach the Prefect API at {PREFECT_API_URL.value()}: start it "
            "(`prefect server start`) or point PREFECT_API_URL at a running one"
        ) from exc


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


if __name__ == "__main__":
    main()
