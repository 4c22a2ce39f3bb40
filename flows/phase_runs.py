"""Phase subflow runs created ahead, while the phase before them runs.

Calling a subflow makes Prefect's engine do seven API calls, one after the other, before the flow's
first line runs: the parent's tracking task run, a search for an earlier run of it, the flow, the
flow run, its name, the Running state and a read back. ``runbook bench overhead`` timed them at
0.08-0.11 s per phase on a 2-core machine: a third of a short phase's own cost. The incident flow
always runs its phases in the same order, so the next phase's tracking task run and flow run
(named, with its parameters, Pending) are created while the current one works; starting the
prepared run then takes three calls (its retry policy, Running, a read back).

The next run is prepared ``PREPARE_AFTER_S`` after the current one is Running (a hook of the
prepared flow), once the current phase's first steps have sent their calls (prepared at once, its
calls queued at the server with the phase's first ones and delayed them). The report artifacts of
the phases before are created at the same moment (``flows.report.unpublished``): created as its
phase ended, an artifact competed at the server with Prefect recording that run Completed. The last
phase's, and any left, are created when the incident flow is done with its phases (``discard``),
which waits for them all.

The first preparation asks the server for the ids of the incident flow and all five phase flows in
one request (``_look_up``; the engine upserts each phase's flow by name, five ``POST /flows/`` per
incident, since every incident runs in a new process), and hands the flows it gets to Prefect's
events, which would otherwise read each of them again by id for the first event of its runs (six
``GET /flows/{id}`` per incident; the incident flow's own read may still come first): of the ~73
requests an incident's run, its worker and the gateway made, ten or eleven become one.

A prepared run is what the engine would have made: a subflow of the incident's run linked by its
tracking task run (the server mirrors the subflow's states onto it), named by the flow's template.
A preparation that failed is not fatal: that phase is called the ordinary way. A run prepared and
never started (the incident flow failed before it) is cancelled with a message saying so, not
left Pending.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Sequence
from typing import Any
from uuid import UUID

from prefect import Flow, Task
from prefect.artifacts import Artifact
from prefect.client.orchestration import PrefectClient, get_client
from prefect.client.schemas.actions import FlowRunCreate
from prefect.client.schemas.objects import FlowRun, FlowRunPolicy, State
from prefect.context import FlowRunContext, TagsContext
from prefect.exceptions import MissingContextError
from prefect.flow_engine import run_flow_async
from prefect.logging import get_run_logger
from prefect.states import Cancelled, Pending, to_state_create

from flows.report import unpublished

logger = logging.getLogger(__name__)


def _warn(message: str, *args: Any) -> None:
    """A warning in the incident run's log (the Prefect UI shows it), else in this module's."""
    try:
        run_logger: logging.Logger | logging.LoggerAdapter[logging.Logger] = get_run_logger()
    except MissingContextError:
        run_logger = logger
    run_logger.warning(message, *args)


NOT_RUN = "not run: the incident flow ended before this phase started"
DISCARD_TIMEOUT_S = 10.0

#: how long after a prepared run is Running the next phase's run is prepared: by then the phase's
#: first steps have sent their calls, and the server's work for the next run does not delay them
PREPARE_AFTER_S = 0.1

#: flow run id -> what to do once that prepared run is Running (prepare the next phase's run)
_when_running: dict[UUID, Callable[[], None]] = {}


def prepare_next_phase_run(flow: Flow[..., Any], flow_run: FlowRun, state: State) -> None:
    """Hook of a prepared run: once it is Running, the next phase's run is prepared."""
    then = _when_running.pop(flow_run.id, None)
    if then is not None:
        then()


@functools.cache
def _prepared_flow(flow: Flow[..., Any]) -> Flow[..., Any]:
    """The flow as a prepared run runs it: named already, preparing the next one when Running, and
    its parameters not validated again (the incident flow's own, validated when it started: an
    ``Options`` model and the incident's id; validating them again took ~3 ms of each phase's start).
    """
    copy = flow.with_options()
    copy.flow_run_name = None
    copy.on_running_hooks = [*flow.on_running_hooks, prepare_next_phase_run]
    copy.should_validate_parameters = False
    return copy


def warm(*flows: Flow[..., Any]) -> None:
    """Build the prepared copies of ``flows`` now (``flows._preload``): ``Flow.with_options``
    generates the flow's parameter schema, ~5 ms of CPU in the middle of the phase before."""
    for flow in flows:
        _prepared_flow(flow)


def _run_name(flow: Flow[..., Any], parameters: dict[str, Any]) -> str | None:
    template = flow.flow_run_name
    return template.format(**parameters) if isinstance(template, str) else None


#: (API URL, flow name) -> the flow's id on that server (``POST /flows/`` upserts by name, so the id
#: stays the same for as long as the flow exists there)
_flow_ids: dict[tuple[str, str], UUID] = {}
#: the flows ``_look_up`` asked for once (a flow it did not find is created, not asked for again)
_asked: set[tuple[str, str]] = set()


def _flow_key(client: PrefectClient, flow: Flow[..., Any]) -> tuple[str, str]:
    return (str(client.api_url), flow.name)


async def _flow_id(
    client: PrefectClient, flow: Flow[..., Any], family: Sequence[Flow[..., Any]] = ()
) -> UUID:
    """``flow``'s id on the client's server, asked once per server and flow. With ``family`` (the
    incident's flow and its other phases), the first miss asks for all their ids in one request
    (``_look_up``); a flow the server does not have yet is created (``POST /flows/``)."""
    key = _flow_key(client, flow)
    if key not in _flow_ids and key not in _asked and family:
        await _look_up(client, [flow, *family])
    if key not in _flow_ids:
        _flow_ids[key] = await client.create_flow(flow)
    return _flow_ids[key]


async def _look_up(client: PrefectClient, flows: Sequence[Flow[..., Any]]) -> None:
    """One ``POST /flows/filter`` for the ids of ``flows`` not known yet. What it finds is also
    handed to Prefect's events (``remember_for_events``), which would otherwise read each flow
    again (``GET /flows/{id}``) for the first event of each of its runs. A failed lookup is left
    to ``POST /flows/``."""
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    keys = {_flow_key(client, f) for f in flows} - _flow_ids.keys()
    _asked.update(keys)
    names = sorted(name for _, name in keys)
    try:
        found = await client.read_flows(flow_filter=FlowFilter(name=FlowFilterName(any_=names)))
    except Exception as exc:  # each flow is then created (upserted) by name, as before
        logger.debug("could not look up the flows %s: %s", names, exc)
        return
    for known in found:
        _flow_ids[(str(client.api_url), known.name)] = known.id
        remember_for_events(known)


def remember_for_events(known: Any) -> bool:
    """Put a flow the server answered with in Prefect's per-process cache of the objects its events
    name as related resources (``prefect.events.related.RESOURCE_CACHE``, keyed ``flow.<id>``, an
    entry and when it was stored), as its own read would; False, and nothing done, if that cache is
    not there (a later Prefect) or is full."""
    from prefect.events import related
    from prefect.types._datetime import now

    cache = getattr(related, "RESOURCE_CACHE", None)
    if not isinstance(cache, dict) or len(cache) >= getattr(related, "MAX_CACHE_SIZE", 0):
        return False
    cache.setdefault(f"flow.{known.id}", ({"kind": "flow", "object": known}, now("UTC")))
    return True


async def create_subflow_run(
    flow: Flow[..., Any],
    parameters: dict[str, Any],
    parent: FlowRunContext,
    tags: set[str],
    family: Sequence[Flow[..., Any]] = (),
) -> FlowRun:
    """What the engine creates when ``flow`` is called inside ``parent``'s run: its tracking task
    run and the flow's id (side by side; the id once per server and flow, with ``family``'s ids in
    the same request), then the flow run (the request ``PrefectClient.create_flow_run`` makes, with
    the id it would look up again)."""
    tracking = Task(name=flow.name, fn=flow.fn, version=flow.version)
    async with get_client() as client:
        task_run, flow_id = await asyncio.gather(
            tracking.create_run(flow_run_context=parent, parameters=parameters),
            _flow_id(client, flow, family),
        )
        request = FlowRunCreate(
            flow_id=flow_id,
            flow_version=flow.version,
            name=_run_name(flow, parameters),
            parameters=flow.serialize_parameters(parameters),
            tags=sorted(tags),
            parent_task_run_id=task_run.id,
            state=to_state_create(Pending()),
            empirical_policy=FlowRunPolicy(
                retries=flow.retries, retry_delay=int(flow.retry_delay_seconds or 0)
            ),
        )
        try:
            response = await client.request(
                "POST", "/flow_runs/", json=request.model_dump(mode="json", exclude_unset=True)
            )
        except Exception:
            _flow_ids.pop(_flow_key(client, flow), None)  # gone from the server?
            raise
    return FlowRun.model_validate(response.json())


async def _create_artifact(artifact: Artifact) -> None:
    """Create a phase's report artifact; a failure is logged (the ledger has what it shows), not
    raised in a later phase or after the incident's phases are done."""
    try:
        await artifact.acreate()
    except Exception as exc:
        _warn("could not publish the %s report artifact: %s", artifact.key, exc)


class PhaseRuns:
    """The incident flow's phase runs: prepared ahead, started when their turn comes.

    Made inside the incident's flow run (their parent); ``discard`` it when the phases are done.
    ``phases`` (all the incident's phase flows) lets the first preparation ask for every phase's id
    and the incident flow's in one request (``_look_up``) instead of one per phase.

    Raises:
        RuntimeError: outside a flow run.
    """

    def __init__(self, phases: Sequence[Flow[..., Any]] = ()) -> None:
        parent = FlowRunContext.get()
        if parent is None or parent.flow_run is None:
            raise RuntimeError("phase runs are prepared inside the incident's flow run")
        self._parent = parent
        self._family = [*([parent.flow] if parent.flow is not None else []), *phases]
        self._tags = set(TagsContext.get().current_tags)
        self._prepared: dict[str, asyncio.Task[FlowRun]] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._unpublished: list[Artifact] = []  # the report artifacts of the phases that ran
        self._publishing: list[asyncio.Task[None]] = []
        self._closed = False

    def prepare(self, flow: Flow[..., Any], parameters: dict[str, Any]) -> None:
        """Start creating ``flow``'s run in the background (once per flow; not after ``discard``)."""
        timer = self._timers.pop(flow.name, None)
        if timer is not None:
            timer.cancel()
        if self._closed or flow.name in self._prepared:
            return
        _prepared_flow(flow)  # built at preload (warm); else here, off the phase's path
        self._prepared[flow.name] = asyncio.create_task(
            create_subflow_run(flow, parameters, self._parent, self._tags, self._family)
        )

    def prepare_later(self, flow: Flow[..., Any], parameters: dict[str, Any]) -> None:
        """``prepare`` in ``PREPARE_AFTER_S`` seconds."""
        if self._closed or flow.name in self._prepared or flow.name in self._timers:
            return
        loop = asyncio.get_running_loop()
        self._timers[flow.name] = loop.call_later(PREPARE_AFTER_S, self.prepare, flow, parameters)

    def publish_pending(self) -> None:
        """Start creating the report artifacts the phases so far left (``discard`` waits for them)."""
        pending, self._unpublished = self._unpublished, []
        self._publishing += [asyncio.ensure_future(_create_artifact(a)) for a in pending]

    def _under_way(self, then: Flow[..., Any] | None, parameters: dict[str, Any]) -> None:
        """A phase's run is Running: in ``PREPARE_AFTER_S``, once its first calls are out, the next
        phase's run is made and the earlier phases' artifacts are created."""
        if then is not None:
            self.prepare_later(then, parameters)
        if self._unpublished and not self._closed:
            asyncio.get_running_loop().call_later(PREPARE_AFTER_S, self.publish_pending)

    async def run(
        self,
        flow: Flow[..., Any],
        parameters: dict[str, Any],
        then: Flow[..., Any] | None = None,
    ) -> Any:
        """Run ``flow`` as a subflow of the incident's run (its prepared run if there is one) and
        return its result; once this one is Running, prepare ``then``'s run and publish the report
        artifacts of the phases before."""
        later: list[Artifact] = []
        token = unpublished.set(later)
        try:
            return await self._run(flow, parameters, then)
        finally:
            unpublished.reset(token)
            self._unpublished += later

    async def _run(
        self, flow: Flow[..., Any], parameters: dict[str, Any], then: Flow[..., Any] | None
    ) -> Any:
        self.prepare(flow, parameters)  # a no-op if it was prepared ahead
        pending = self._prepared.pop(flow.name, None)
        flow_run: FlowRun | None = None
        if pending is not None:
            try:
                flow_run = await pending
            except Exception as exc:  # not fatal: the engine creates the run itself below
                _warn("could not create the %s run ahead (%s); calling it", flow.name, exc)
        if flow_run is None:
            self._under_way(then, parameters)
            return await flow(**parameters)
        _when_running[flow_run.id] = functools.partial(self._under_way, then, parameters)
        try:
            return await run_flow_async(
                flow=_prepared_flow(flow),
                flow_run=flow_run,
                parameters=parameters,
                return_type="result",
            )
        finally:
            _when_running.pop(flow_run.id, None)

    async def discard(self) -> None:
        """Prepare nothing more, cancel every prepared run that was never started, and wait for
        every report artifact to be created."""
        self._closed = True
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        self.publish_pending()
        try:
            await self._cancel_unused()
        finally:
            publishing, self._publishing = self._publishing, []
            await asyncio.gather(*publishing)

    async def _cancel_unused(self) -> None:
        prepared, self._prepared = self._prepared, {}
        if not prepared:
            return
        # a creation under way is let finish (cancelled midway it could leave its tracking task
        # run alone in the parent's graph), then its run is cancelled
        done, _ = await asyncio.wait(prepared.values(), timeout=DISCARD_TIMEOUT_S)
        for name, pending in prepared.items():
            if pending not in done:
                pending.cancel()
                _warn("the %s run was still being prepared; left as it is", name)
                continue
            if pending.cancelled() or pending.exception() is not None:
                continue  # nothing was made
            flow_run = pending.result()
            try:
                async with get_client() as client:
                    await client.set_flow_run_state(
                        flow_run.id, Cancelled(message=NOT_RUN), force=True
                    )
            except Exception as exc:
                _warn("could not cancel the unused %s run %s: %s", name, flow_run.id, exc)
