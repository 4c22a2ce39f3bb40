"""The outbox dispatcher: a fake launcher for the retry logic, and real Prefect down then back."""

from __future__ import annotations

import asyncio
import socket

import httpx
import pytest

from runbook.clock import ManualClock
from runbook.gateway import GatewayConfig, create_app
from runbook.gateway.dispatcher import INCIDENT_DEPLOYMENT, Dispatcher, PrefectLauncher
from runbook.ledger import Ledger
from runbook.models import Alert
from tests.gateway import payloads as p


def _open(ledger: Ledger, key: str) -> int:
    outcome = ledger.record_alert(Alert(source="generic", delivery_id=key, dedup_key=key))
    assert outcome.incident_id is not None
    return outcome.incident_id


async def test_failed_launch_is_retried_with_backoff_then_done(
    ledger: Ledger, clock: ManualClock
) -> None:
    """A launch that fails stays in the outbox until its backoff passes, then launches once."""
    attempts: list[int] = []

    async def launcher(incident_id: int) -> None:
        attempts.append(incident_id)
        if len(attempts) < 3:
            raise ConnectionError("prefect is down")

    incident = _open(ledger, "k1")
    dispatcher = Dispatcher(ledger, launcher, backoff_s=2.0)
    assert await dispatcher.drain_once() == 0  # attempt 1 fails: retry in 2 s
    assert await dispatcher.drain_once() == 0 and attempts == [incident]  # not yet due
    clock.advance(2.1)
    assert await dispatcher.drain_once() == 0  # attempt 2 fails: retry in 4 s
    clock.advance(3)
    assert await dispatcher.drain_once() == 0 and len(attempts) == 2
    clock.advance(1.1)
    assert await dispatcher.drain_once() == 1
    clock.advance(100)
    assert await dispatcher.drain_once() == 0
    assert attempts == [incident] * 3 and ledger.outbox_stats()["pending"] == 0
    await dispatcher.stop()


async def test_launches_overlap_up_to_the_concurrency_and_each_happens_once(
    ledger: Ledger,
) -> None:
    """Six opened incidents with concurrency 3: at most 3 launches are in flight at once (and 3
    indeed are), each incident is launched exactly once, and the outbox is empty after; one that
    fails is retried later without holding the others."""
    running = most = 0
    launched: list[int] = []
    failed_once: set[int] = set()

    async def launcher(incident_id: int) -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await asyncio.sleep(0.02)
        running -= 1
        if incident_id == incidents[0] and incident_id not in failed_once:
            failed_once.add(incident_id)
            raise ConnectionError("prefect hiccup")
        launched.append(incident_id)

    incidents = [_open(ledger, f"c{i}") for i in range(6)]
    dispatcher = Dispatcher(ledger, launcher, concurrency=3, backoff_s=0.0)
    assert await dispatcher.drain_once() == 5
    assert await dispatcher.drain_once() == 1
    assert most == 3
    assert sorted(launched) == sorted(incidents)
    assert ledger.outbox_stats()["pending"] == 0
    await dispatcher.stop()


def test_concurrency_must_be_positive(ledger: Ledger) -> None:
    """Zero launches in flight is refused with the reason."""
    with pytest.raises(ValueError, match="at least 1"):
        Dispatcher(ledger, concurrency=0)


def test_backoff_doubles_and_is_capped(ledger: Ledger) -> None:
    """Retry delays double per attempt and stop at the cap."""
    dispatcher = Dispatcher(ledger, backoff_s=0.5, max_backoff_s=30)
    assert [dispatcher.delay(n) for n in (1, 2, 3, 10)] == [0.5, 1.0, 2.0, 30.0]


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _create_deployment(api_url: str, name: str = INCIDENT_DEPLOYMENT) -> str:
    """Create (or update) deployment ``name`` (``flow/deployment``); its id."""
    from prefect.client.orchestration import PrefectClient

    flow_name, deployment = name.split("/")
    async with PrefectClient(api_url) as client:
        flow_id = await client.create_flow_from_name(flow_name)
        return str(await client.create_deployment(flow_id=flow_id, name=deployment))


async def test_prefect_down_answers_202_and_launches_when_back(
    ledger: Ledger, clock: ManualClock, config: GatewayConfig, prefect_api: str
) -> None:
    """With Prefect unreachable the sender gets 202; once Prefect is back the run is created once."""
    from prefect.client.orchestration import PrefectClient
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterIdempotencyKey

    await _create_deployment(prefect_api)
    launcher = PrefectLauncher(api_url=f"http://127.0.0.1:{_closed_port()}/api")
    app = create_app(ledger, config, launcher=launcher, clock=clock)
    gateway = app.state.gateway
    gateway.dispatcher.poll_s = 0.05
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://g") as c:
        response = await c.post("/hooks/generic", content=p.generic(key="down"), headers=p.bearer())
    assert response.status_code == 202
    (incident_id,) = response.json()["opened"]
    for _ in range(600):
        if gateway.dispatcher.failures:
            break
        await asyncio.sleep(0.05)
    assert gateway.dispatcher.failures >= 1 and gateway.dispatcher.launched == 0
    assert ledger.outbox_stats()["pending"] == 1

    launcher.api_url = prefect_api  # Prefect is back
    clock.advance(60)
    gateway.dispatcher.wake()
    for _ in range(400):
        if gateway.dispatcher.launched:
            break
        await asyncio.sleep(0.05)
    await gateway.stop()
    assert gateway.dispatcher.launched == 1 and ledger.outbox_stats()["pending"] == 0
    key = f"incident-{incident_id}"
    async with PrefectClient(prefect_api) as client:
        runs = await client.read_flow_runs(
            flow_run_filter=FlowRunFilter(idempotency_key=FlowRunFilterIdempotencyKey(any_=[key]))
        )
    assert len(runs) == 1 and runs[0].parameters == {"incident_id": incident_id}


async def test_stop_ends_the_loop_even_when_its_wait_ends_as_it_is_cancelled(
    ledger: Ledger,
) -> None:
    """Python 3.11's wait_for returns the result of a wait that ended as the cancellation landed,
    losing the cancellation (gh-86296): the gateway's teardown then waited forever on a dispatcher
    that kept polling (seen twice in one CI run). Made certain here: the outbox is woken right as
    stop() cancels; stop() still returns."""

    async def launch(incident_id: int) -> None:
        return None

    dispatcher = Dispatcher(ledger, launch, poll_s=0.05)
    dispatcher.start()
    await asyncio.sleep(0.2)  # a few polls: it is waiting on its wake event now
    dispatcher.wake()  # the wait ends in the same turn of the loop as the cancellation
    done, _ = await asyncio.wait({asyncio.ensure_future(dispatcher.stop())}, timeout=10)
    assert done, "stop() did not return: the dispatch loop went on polling"


async def _runs_of(api_url: str, deployment_id: str) -> list[object]:
    from prefect.client.orchestration import PrefectClient
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    async with PrefectClient(api_url) as client:
        return await client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))
        )


async def test_the_launcher_looks_the_deployment_up_once_and_again_when_it_was_made_anew(
    prefect_api: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A launch is one request once the deployment's id is known: three launches look its name up
    once, and each makes its run, scheduled, with the incident as parameter. Deleted and made
    again, the deployment has a new id: the next launch looks it up again and its run lands on the
    new deployment."""
    from prefect.client.orchestration import PrefectClient

    name = "incident-response/launcher-lookups"
    first = await _create_deployment(prefect_api, name)
    lookups: list[str] = []
    read_by_name = PrefectClient.read_deployment_by_name

    async def counted(self: PrefectClient, name: str, *args: object, **kwargs: object) -> object:
        lookups.append(name)
        return await read_by_name(self, name, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(PrefectClient, "read_deployment_by_name", counted)
    launcher = PrefectLauncher(api_url=prefect_api, deployment=name)
    for incident_id in (9101, 9102, 9103):
        await launcher(incident_id)
    assert lookups == [name]
    runs = await _runs_of(prefect_api, first)
    assert sorted(r.parameters["incident_id"] for r in runs) == [9101, 9102, 9103]  # type: ignore[attr-defined]
    assert {r.state.type.value for r in runs} == {"SCHEDULED"}  # type: ignore[attr-defined]

    async with PrefectClient(prefect_api) as client:
        await client.delete_deployment(first)  # type: ignore[arg-type]
    second = await _create_deployment(prefect_api, name)
    assert second != first
    await launcher(9104)
    assert lookups == [name, name]
    assert [r.parameters for r in await _runs_of(prefect_api, second)] == [  # type: ignore[attr-defined]
        {"incident_id": 9104}
    ]


async def test_launching_a_deployment_that_does_not_exist_fails_and_creates_nothing(
    prefect_api: str,
) -> None:
    """No deployment by that name: the launch raises (the dispatcher retries it later) instead of
    creating anything or looking forever."""
    from prefect.exceptions import ObjectNotFound

    launcher = PrefectLauncher(api_url=prefect_api, deployment="incident-response/never-made")
    with pytest.raises(ObjectNotFound):
        await launcher(9201)
    with pytest.raises(ObjectNotFound):
        await launcher(9201)
