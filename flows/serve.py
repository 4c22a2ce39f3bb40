"""Serve every deployment of the runbook from one process, no work pool needed (`runbook serve`).

The deployments are the same nine that prefect.yaml declares, under the same names
(``<flow-name>/runbook``), so the alert gateway launches ``incident-response/runbook`` whichever way they
are run. Serving takes over a deployment of that name that ``prefect deploy`` created: it keeps its id
(and run history), its description, tags, parameter schema and schedule are replaced by these, its
entrypoint becomes a module path, and its work pool and pull steps are cleared, so only this process
runs it. Stopping the server pauses them; `prefect deploy --all` hands them back to the work pool.

The runner polls for scheduled runs every second by default (Prefect's default is 10 s; `runbook serve
--poll 0.2` for less). Each run executes in its own process, forked from a forkserver that imported
prefect and the flows once (see ``start_runs_from_forkserver``), so a run launched by the gateway or the
UI is running about 1 s after it was created on this machine (`runbook bench latency`).
"""

from __future__ import annotations

import atexit
import copyreg
import importlib
import inspect
import math
import multiprocessing
import multiprocessing.context
import signal
import sys
import threading
from types import FrameType
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from prefect.deployments.runner import RunnerDeployment
    from prefect.flows import Flow

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
    "watch": "Every minute: open or attach incidents for metrics past their thresholds (and resolve them when healthy), escalate missed phase deadlines (dead workers) and resolution overruns.",
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


def _served() -> list[tuple[Flow[Any, Any], dict[str, Any]]]:
    """Each flow with its deployment's settings (one source for ``prefect.yaml``'s twins)."""
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

    crons = {watch.name: WATCH_CRON, digest.name: DIGEST_CRON}
    every = (incident_response, detect, triage, mitigate, communicate, rca, watch, review, digest)
    return [
        (
            fl,
            {
                "name": DEPLOYMENT_NAME,
                "description": DESCRIPTIONS[fl.name],
                "tags": TAGS.get(fl.name, PHASE_TAGS),
                "cron": crons.get(fl.name),
                # A module entrypoint (flows.incident.incident_response) is imported from the
                # installed package, wherever the runner runs. A file entrypoint would be loaded
                # from the deployment's stored path, which a deployment first made by `prefect
                # deploy` (pull steps, no path) does not have, and serving it crashes every run.
                "entrypoint_type": EntrypointType.MODULE_PATH,
            },
        )
        for fl in every
    ]


def build_deployments() -> list[RunnerDeployment]:
    """Build the nine deployments, named ``<flow-name>/runbook`` like the ones in prefect.yaml.

    Returns:
        RunnerDeployments of incident-response, detect, triage, mitigate, communicate, rca, watch
        (on a one-minute cron), review and digest (daily), as ``main`` serves them.
    """
    out: list[RunnerDeployment] = []
    for fl, settings in _served():
        # _sync: to_deployment would hand back a coroutine when called from async code (tests)
        dep = fl.to_deployment(**settings, _sync=True)  # type: ignore[call-arg]
        assert not inspect.isawaitable(dep)
        # Marked as set so that re-applying clears a work pool `prefect deploy` gave it (as
        # Flow.serve and Runner.add_flow do): served runs must not also be offered to the pool's
        # workers.
        dep.work_pool_name = None
        dep.work_queue_name = None
        out.append(dep)
    return out


def main(limit: int | None = None, poll_seconds: float = 1.0) -> None:
    """Serve every deployment until SIGINT (Ctrl-C) or SIGTERM, then return normally.

    On SIGTERM Prefect's runner stops polling and cancels the runs it has in flight (marked cancelled,
    not left running); on SIGINT it stops polling. Either way it then pauses the deployments'
    schedules, so no watch runs pile up while nothing serves them; the next start resumes them.

    The flows are added to the runner as flow objects (``Runner.add_flow``, what ``Flow.serve``
    does), not as deployments alone (what ``prefect.serve`` does): the runner then starts each run
    from the flow it holds, in a child forked from a process that has imported prefect and the flows
    already (``start_runs_from_forkserver``), instead of a fresh ``python -m prefect.engine`` that
    imports everything again (several seconds on 2 busy cores).

    Args:
        limit: the most flow runs executed at once (Prefect's default, 5, when None).
        poll_seconds: how often the runner asks the server for runs to start.

    Raises:
        ValueError: poll_seconds is not positive.
        RuntimeError: the Prefect API cannot be reached.
    """
    if poll_seconds <= 0:
        raise ValueError(f"poll_seconds must be positive, got {poll_seconds}")
    import asyncio

    from prefect.exceptions import TerminationSignal
    from prefect.runner import Runner
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
        start_runs_from_forkserver()  # its imports overlap with registering the deployments
        # The setting is whole seconds and is read when prefect is first imported, so it is set for
        # this process explicitly; the runner's query_seconds takes the exact (fractional) value.
        with temporary_settings(updates={PREFECT_RUNNER_POLL_FREQUENCY: math.ceil(poll_seconds)}):
            runner = Runner(pause_on_shutdown=True, limit=limit, query_seconds=poll_seconds)
            names = []
            for fl, settings in _served():
                runner.add_flow(fl, **settings)
                names.append(f"{fl.name}/{settings['name']}")
            print(
                "Your deployments are being served and polling for scheduled runs!\n  "
                + "\n  ".join(names),
                flush=True,
            )
            try:
                # the runner handles SIGTERM itself once running (stops, cancels in-flight runs)
                asyncio.run(runner.start())
            except (KeyboardInterrupt, TerminationSignal) as exc:
                print(f"runbook serve: {type(exc).__name__}, shut down", flush=True)
    except KeyboardInterrupt:
        print("runbook serve: interrupted before the runner started; nothing was served")
    except httpx.ConnectError as exc:
        raise RuntimeError(
            f"cannot reach the Prefect API at {PREFECT_API_URL.value()}: start it "
            "(`prefect server start`) or point PREFECT_API_URL at a running one"
        ) from exc


# What a served run imports before its first task: forked from a process that has them already.
FORKSERVER_PRELOAD = [
    "flows.serve",
    "prefect.flow_engine",
    "prefect.task_engine",
    "flows.incident",
    "flows.watch",
    "flows.reviews",
    "flows.digest",
    # a forkserver child first runs the main module of `runbook serve` again (as __mp_main__, as
    # every spawned child does): runbook.cli, which imports typer (~100 ms per run unless here)
    "runbook.cli",
    "flows._preload",  # last: builds the models of everything above
]


class _ForkserverProcess(multiprocessing.context.ForkServerProcess):
    """A forkserver child that runs the interpreter's exit handlers when its target returns.

    A spawned child ends with ``sys.exit`` and so runs the ``atexit`` handlers, where Prefect
    sends the run's last logs and events; a forkserver child ends with ``os._exit`` and would
    lose them.
    """

    def run(self) -> None:
        try:
            super().run()
        finally:
            atexit._run_exitfuncs()


class _ForkserverContext(multiprocessing.context.ForkServerContext):
    Process = _ForkserverProcess  # type: ignore[assignment]


class _ForkserverMultiprocessing:
    """``multiprocessing`` as prefect.flow_engine sees it, except that its "spawn" context is the
    forkserver context (everything else is the real module)."""

    context = _ForkserverContext()

    def __getattr__(self, name: str) -> Any:
        return getattr(multiprocessing, name)

    def get_context(self, method: str | None = None) -> Any:
        return self.context if method == "spawn" else multiprocessing.get_context(method)


def run_flow_in_forkserver(*args: Any, **kwargs: Any) -> Any:
    """Prefect's ``run_flow_in_subprocess``, unchanged, with its process forked from the forkserver.

    Prefect starts each run of a served flow in a fresh *spawn* interpreter that imports prefect and
    the flows again. The forkserver imported them once (FORKSERVER_PRELOAD) and forks a child per
    run in milliseconds; the child still gets the run's environment, settings and serialized call
    exactly as a spawned one would (Prefect's own code builds them). The swap lasts for this
    synchronous call only, on the runner's event-loop thread.
    """
    import prefect.flow_engine as engine
    from prefect.flows import Flow

    real = engine.multiprocessing
    setattr(engine, "multiprocessing", _ForkserverMultiprocessing())  # noqa: B010
    had = copyreg.dispatch_table.get(Flow)
    copyreg.dispatch_table[Flow] = _flow_by_reference
    try:
        return engine.run_flow_in_subprocess(*args, **kwargs)
    finally:
        setattr(engine, "multiprocessing", real)  # noqa: B010
        if had is None:
            copyreg.dispatch_table.pop(Flow, None)
        else:
            copyreg.dispatch_table[Flow] = had


def _flow_by_reference(fl: Flow[Any, Any]) -> Any:
    """Pickle a module-level flow as "import it from its module", not by value.

    By value, cloudpickle sends the flow's function with only the globals its code names, not the
    ones its string annotations name (``from __future__ import annotations``), so the child could
    not build the parameter model (``Declaration`` is not defined). The child has the module
    imported already (FORKSERVER_PRELOAD).
    """
    module = sys.modules.get(fl.fn.__module__)
    if module is not None and getattr(module, fl.fn.__name__, None) is fl:
        return (_import_flow, (fl.fn.__module__, fl.fn.__name__))
    return fl.__reduce_ex__(4)


def _import_flow(module: str, name: str) -> Flow[Any, Any]:
    flow: Flow[Any, Any] = getattr(importlib.import_module(module), name)
    return flow


def start_runs_from_forkserver() -> None:
    """Make this process's runner start runs from a forkserver, and start that server now.

    Prefect's DirectSubprocessStarter (the runner's starter for flows it holds) calls
    ``prefect.runner._starter_direct.run_flow_in_subprocess`` and documents patching that name to
    override it; this points it at ``run_flow_in_forkserver``. No-op where there is no forkserver
    (Windows).
    """
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return
    from multiprocessing import forkserver

    import prefect.runner._starter_direct as starter

    multiprocessing.get_context("forkserver").set_forkserver_preload(FORKSERVER_PRELOAD)
    forkserver.ensure_running()  # imports the preload while the runner starts, not on the 1st run
    starter.run_flow_in_subprocess = run_flow_in_forkserver  # type: ignore[assignment]


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


if __name__ == "__main__":
    main()
