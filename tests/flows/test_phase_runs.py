"""The incident flow's phase runs, created ahead (flows.phase_runs), under the Prefect test server."""

from __future__ import annotations

import asyncio
import logging
from typing import Any
from uuid import UUID

import pytest
from prefect import flow

import flows.incident
import flows.phase_runs
from flows.incident import incident_response
from flows.phase_runs import NOT_RUN, PhaseRuns
from flows.runtime import Options
from runbook.sandbox.scenarios import apply_scenario
from tests.flows.test_incident_flow import open_incident

pytestmark = pytest.mark.timeout(180)
PHASES = ("detect", "triage", "mitigate", "communicate", "rca")


async def _phase_runs(parent_id: UUID) -> dict[str, Any]:
    """The incident run's subflow runs by flow name, each with its tracking task run."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId

    async with get_client() as client:
        runs = await client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[parent_id])
            )
        )
        out: dict[str, Any] = {}
        for run in runs:
            name = (await client.read_flow(run.flow_id)).name
            assert name not in out, f"two {name} runs under the incident's run"
            tracking = await client.read_task_run(run.parent_task_run_id)
            out[name] = (run, tracking)
        return out


def test_phases_run_as_named_subflows_from_the_runs_made_ahead(
    world, options: Options, flow_env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every phase runs once, as the run created ahead for it: a subflow of the incident's run
    (its tracking task run is in that run and Completed, as the subflow is), named INC-<id> <phase>."""
    made: list[UUID] = []
    create = flows.phase_runs.create_subflow_run

    async def recording(*args: Any, **kwargs: Any) -> Any:
        run = await create(*args, **kwargs)
        made.append(run.id)
        return run

    monkeypatch.setattr(flows.phase_runs, "create_subflow_run", recording)
    apply_scenario(world, "bad-deploy")
    incident_id = open_incident(options)
    state = asyncio.run(
        incident_response(incident_id=incident_id, options=options, return_state=True)
    )
    assert state.is_completed() and state.result()["resolved"] is True
    parent_id = state.state_details.flow_run_id
    runs = asyncio.run(_phase_runs(parent_id))

    assert sorted(runs) == sorted(PHASES)
    assert sorted(made) == sorted(run.id for run, _ in runs.values())
    for name, (run, tracking) in runs.items():
        assert run.name == f"INC-{incident_id} {name}"
        assert run.state.is_completed(), (name, run.state)
        assert tracking.flow_run_id == parent_id
        assert tracking.state.is_completed(), (name, tracking.state)


def test_a_new_process_asks_for_every_phase_flow_once_and_its_events_read_none(
    world, options: Options, flow_env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run process (forked per incident, so its caches start empty) asks for the ids of the
    incident flow and its five phases in ONE request, creates none that exist, and Prefect's
    events do not read any phase flow again by id (before: five ``POST /flows/`` and six
    ``GET /flows/{id}`` per incident)."""
    from prefect.client.orchestration import PrefectClient, get_client
    from prefect.events import related

    from flows import communicate, detect, mitigate, rca, triage

    phases = (detect.detect, triage.triage, mitigate.mitigate, communicate.communicate, rca.rca)

    async def on_server() -> dict[str, UUID]:
        async with get_client() as client:
            return {f.name: await client.create_flow(f) for f in (incident_response, *phases)}

    ids = asyncio.run(on_server())  # the flows exist, as after a server's first incident
    flows.phase_runs._flow_ids.clear()  # as in a new process
    flows.phase_runs._asked.clear()
    monkeypatch.setattr(related, "RESOURCE_CACHE", {})
    calls: dict[str, list[Any]] = {"read_flows": [], "create_flow": [], "read_flow": []}

    def counting(name: str) -> Any:
        real = getattr(PrefectClient, name)

        async def wrapper(self: PrefectClient, *args: Any, **kwargs: Any) -> Any:
            calls[name].append(kwargs.get("flow_filter") or (args[0] if args else None))
            return await real(self, *args, **kwargs)

        return wrapper

    for name in calls:
        monkeypatch.setattr(PrefectClient, name, counting(name))
    apply_scenario(world, "bad-deploy")
    incident_id = open_incident(options)
    state = asyncio.run(
        incident_response(incident_id=incident_id, options=options, return_state=True)
    )

    assert state.is_completed() and state.result()["resolved"] is True
    assert len(calls["read_flows"]) == 1, calls["read_flows"]
    assert sorted(calls["read_flows"][0].name.any_) == sorted(ids)
    assert calls["create_flow"] == []
    phase_ids = {ids[f.name] for f in phases}
    assert not [i for i in calls["read_flow"] if i in phase_ids], calls["read_flow"]
    assert sorted(asyncio.run(_phase_runs(state.state_details.flow_run_id))) == sorted(PHASES)


def test_a_flow_remembered_for_events_is_not_read_again() -> None:
    """What ``remember_for_events`` stores is what Prefect's events use for a run of that flow:
    its related resources name the flow without asking the server (this test fails if a Prefect
    release changes that cache's form, before production would)."""
    from uuid import uuid4

    from prefect.client.schemas.objects import Flow as FlowObject
    from prefect.events import related

    from flows.phase_runs import remember_for_events

    known = FlowObject(id=uuid4(), name="probe-remembered")
    cache: dict[str, Any] = {}
    original = related.RESOURCE_CACHE
    related.RESOURCE_CACHE = cache
    try:
        assert remember_for_events(known) is True

        async def never(obj_id: Any) -> Any:
            raise AssertionError(f"read {obj_id} from the server")

        entry = asyncio.run(
            related._get_and_cache_related_object(
                kind="flow", role="flow", client_method=never, obj_id=known.id, cache=cache
            )
        )
        resource = related.object_as_related_resource(kind="flow", role="flow", object=known)
        assert entry["object"] is known and entry["role"] == "flow"
        assert resource.id == f"prefect.flow.{known.id}" and resource.name == known.name
        cache.update({f"x{i}": ({}, None) for i in range(related.MAX_CACHE_SIZE)})
        assert remember_for_events(FlowObject(id=uuid4(), name="probe-2")) is False  # full
    finally:
        related.RESOURCE_CACHE = original


def test_a_failed_phase_leaves_the_run_made_ahead_for_the_next_one_cancelled(
    world, options: Options, flow_env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When a phase fails, the next phase's run (made while it ran) is cancelled with a message
    that says why, never left Pending; the phases after it get no run at all."""

    @flow(name="mitigate", flow_run_name="INC-{incident_id} mitigate")
    async def failing_mitigate(incident_id: int, options: Options | None = None) -> None:
        await asyncio.sleep(1.0)  # long enough for communicate's run to be made meanwhile
        raise RuntimeError("mitigation broke")

    monkeypatch.setattr(flows.incident, "mitigate", failing_mitigate)
    apply_scenario(world, "bad-deploy")
    incident_id = open_incident(options)
    state = asyncio.run(
        incident_response(incident_id=incident_id, options=options, return_state=True)
    )
    assert state.is_failed()
    runs = asyncio.run(_phase_runs(state.state_details.flow_run_id))

    assert sorted(runs) == ["communicate", "detect", "mitigate", "triage"]
    assert runs["detect"][0].state.is_completed() and runs["triage"][0].state.is_completed()
    assert runs["mitigate"][0].state.is_failed()
    communicate, tracking = runs["communicate"]
    assert communicate.state.is_cancelled() and communicate.state.message == NOT_RUN
    assert tracking.state.is_cancelled()


def test_a_run_that_could_not_be_made_ahead_is_made_by_the_engine(
    world, options: Options, flow_env, monkeypatch: pytest.MonkeyPatch, caplog
) -> None:
    """If creating a phase's run ahead fails (the API refused it), that phase is called the
    ordinary way: the incident still resolves, each phase once, named and linked, with a warning."""

    async def refused(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("the API refused it")

    monkeypatch.setattr(flows.phase_runs, "create_subflow_run", refused)
    apply_scenario(world, "bad-deploy")
    incident_id = open_incident(options)
    with caplog.at_level(logging.WARNING):
        state = asyncio.run(
            incident_response(incident_id=incident_id, options=options, return_state=True)
        )
    assert state.is_completed() and state.result()["resolved"] is True
    runs = asyncio.run(_phase_runs(state.state_details.flow_run_id))
    assert sorted(runs) == sorted(PHASES)
    for name, (run, _) in runs.items():
        assert run.name == f"INC-{incident_id} {name}" and run.state.is_completed()
    warned = [r.getMessage() for r in caplog.records if "could not create the" in r.getMessage()]
    assert len(warned) == len(PHASES) and all("the API refused it" in w for w in warned)
    assert all(r.name == "prefect.flow_runs" for r in caplog.records if r.getMessage() in warned)


def test_phase_runs_belong_inside_a_flow_run() -> None:
    """Outside a flow run there is no parent to link the phases to: a clear error."""
    with pytest.raises(RuntimeError, match="inside the incident's flow run"):
        PhaseRuns()


def test_a_prepared_copy_skips_validation_and_leaves_the_flow_as_it_was() -> None:
    """The copy a prepared run starts does not validate its parameters again (the incident flow's
    own, validated when it started) and adds the preparing hook; the phase flow itself, which an
    ordinary call or a deployment runs, still validates and has no such hook. ``warm`` builds the
    very copy the runs use."""
    from flows.phase_runs import _prepared_flow, prepare_next_phase_run, warm

    @flow(flow_run_name="INC-{incident_id} probe")
    async def probe(incident_id: int) -> int:
        return incident_id

    warm(probe)
    copy = _prepared_flow(probe)
    assert _prepared_flow.cache_info().currsize >= 1 and _prepared_flow(probe) is copy
    assert copy.should_validate_parameters is False and copy.flow_run_name is None
    assert copy.on_running_hooks[-1] is prepare_next_phase_run
    assert probe.should_validate_parameters is True
    assert probe.flow_run_name == "INC-{incident_id} probe"
    assert prepare_next_phase_run not in probe.on_running_hooks


def test_a_flows_id_is_looked_up_once_per_server() -> None:
    """Preparing a run needs the flow's id on the server: asked once per server and flow (the
    server upserts flows by name), asked again for another server or another flow."""
    from uuid import uuid4

    from flows.phase_runs import _flow_id, _flow_ids

    class Client:
        def __init__(self, api_url: str) -> None:
            self.api_url, self.asked = api_url, 0

        async def create_flow(self, f: Any) -> UUID:
            self.asked += 1
            return uuid4()

    @flow(name="probe-flow-id")
    async def probe() -> None:
        return None

    @flow(name="probe-flow-id-2")
    async def probe2() -> None:
        return None

    one, other = Client("http://one/api"), Client("http://other/api")
    _flow_ids.clear()

    async def ask() -> list[UUID]:
        return [
            await _flow_id(one, probe),  # type: ignore[arg-type]
            await _flow_id(one, probe),  # type: ignore[arg-type]
            await _flow_id(other, probe),  # type: ignore[arg-type]
            await _flow_id(one, probe2),  # type: ignore[arg-type]
        ]

    ids = asyncio.run(ask())
    assert ids[0] == ids[1] and len(set(ids)) == 3
    assert (one.asked, other.asked) == (2, 1)


def test_a_family_of_flows_is_looked_up_in_one_request() -> None:
    """With a family (the incident flow and its phases), the first miss asks for all their ids in
    one filter request; the others are then known without asking; a flow the server does not have
    is created; a failed lookup falls back to creating (upserting) the flow by name."""
    from types import SimpleNamespace
    from uuid import uuid4

    from flows.phase_runs import _asked, _flow_id, _flow_ids

    made = {n: uuid4() for n in ("fam-a", "fam-b", "fam-c")}

    class Client:
        def __init__(self, fail: bool = False) -> None:
            self.api_url, self.fail, self.filters, self.created = "http://fam/api", fail, [], []

        async def read_flows(self, flow_filter: Any) -> list[Any]:
            self.filters.append(sorted(flow_filter.name.any_))
            if self.fail:
                raise RuntimeError("the API refused it")
            return [SimpleNamespace(id=made[n], name=n) for n in flow_filter.name.any_ if n in made]

        async def create_flow(self, f: Any) -> UUID:
            self.created.append(f.name)
            return uuid4()

    @flow(name="fam-a")
    async def a() -> None: ...

    @flow(name="fam-b")
    async def b() -> None: ...

    @flow(name="fam-new")
    async def new() -> None: ...

    family = [a, b, new]
    _flow_ids.clear()
    _asked.clear()
    client = Client()

    async def ask(c: Client, *fs: Any) -> list[UUID]:
        return [await _flow_id(c, f, family) for f in fs]  # type: ignore[arg-type]

    got = asyncio.run(ask(client, a, b, a))
    assert got == [made["fam-a"], made["fam-b"], made["fam-a"]]
    assert client.filters == [["fam-a", "fam-b", "fam-new"]] and client.created == []
    fresh = asyncio.run(ask(client, new))[0]
    assert fresh not in made.values() and client.created == ["fam-new"]
    assert client.filters == [["fam-a", "fam-b", "fam-new"]]  # not asked again for the others
    _flow_ids.clear()
    _asked.clear()
    failing = Client(fail=True)
    asyncio.run(ask(failing, b))
    assert failing.filters == [["fam-a", "fam-b", "fam-new"]] and failing.created == ["fam-b"]
    _flow_ids.clear()
    _asked.clear()
