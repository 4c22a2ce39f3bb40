"""``flows/cancel_watch.py``: the executor contexts of one worker process share one cancellation
subscription, and each run's cancellation (or the watch's failure) still reaches its own context."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest
from prefect._internal import observers
from prefect._internal.observers import FlowRunCancellingObserver
from prefect.events.filters import EventFilter, EventNameFilter
from prefect.runner import _flow_run_executor as executor

from flows import cancel_watch
from flows.cancel_watch import RunCancellationWatch, SharedCancellationObserver

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def subscriptions(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every /events/out subscription Prefect's cancellation observers open in this process."""
    opened: list[Any] = []
    real = observers.get_events_subscriber

    def counting(*args: Any, **kwargs: Any) -> Any:
        opened.append(kwargs.get("filter"))
        return real(*args, **kwargs)

    monkeypatch.setattr(observers, "get_events_subscriber", counting)
    # restored after the test, whatever install() did
    monkeypatch.setattr(executor, "FlowRunCancellingObserver", FlowRunCancellingObserver)
    return opened


async def _contexts(n: int) -> bool:
    """Hold ``n`` executor contexts at once, each in a task of its own (as a worker does for
    ``n`` runs), and let them leave; whether the shared observer was open while they were in."""
    entered, leave = asyncio.Semaphore(0), asyncio.Event()

    async def one() -> None:
        async with executor.FlowRunExecutorContext():
            entered.release()
            await leave.wait()

    tasks = [asyncio.create_task(one()) for _ in range(n)]
    for _ in range(n):
        await asyncio.wait_for(entered.acquire(), 60)
    open_inside = cancel_watch.shared_observer().observer is not None
    leave.set()
    await asyncio.gather(*tasks)
    return open_inside


async def test_a_worker_process_opens_one_subscription_for_all_its_runs(
    prefect_api: str, subscriptions: list[Any]
) -> None:
    """Three executor contexts open three subscriptions with Prefect as it is, one once
    installed; the shared one is closed when the last context leaves."""
    assert await _contexts(3) is False
    assert len(subscriptions) == 3
    subscriptions.clear()

    assert cancel_watch.install() is True
    assert cancel_watch.install() is True  # installing twice changes nothing
    assert await _contexts(3) is True
    assert len(subscriptions) == 1
    assert cancel_watch.shared_observer().observer is None
    await _contexts(2)  # a later wave opens it again, once
    assert len(subscriptions) == 2


async def test_a_run_set_cancelling_reaches_the_context_that_started_it(
    prefect_api: str, subscriptions: list[Any]
) -> None:
    """Two runs watched by two contexts through the shared subscription: cancelling one calls
    that run's context back, with its id, and not the other's."""
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.states import Cancelling, Running

    @flow(name="cancel-watch-probe")
    def probe() -> None:
        """Never run: only its flow runs are made."""

    seen: dict[str, list[uuid.UUID]] = {"a": [], "b": []}
    async with get_client() as client:
        run_a, run_b = [await client.create_flow_run(probe) for _ in range(2)]
        for run in (run_a, run_b):
            await client.set_flow_run_state(run.id, Running(), force=True)
        async with (
            RunCancellationWatch(on_cancelling=seen["a"].append) as watch_a,
            RunCancellationWatch(on_cancelling=seen["b"].append) as watch_b,
        ):
            watch_a.add_in_flight_flow_run_id(run_a.id)
            watch_b.add_in_flight_flow_run_id(run_b.id)
            await client.set_flow_run_state(run_b.id, Cancelling(), force=True)
            deadline = time.monotonic() + 60
            while not seen["b"]:
                assert time.monotonic() < deadline, "the cancellation never reached its context"
                await asyncio.sleep(0.2)
            await asyncio.sleep(1)  # room for a wrong delivery to show
    assert seen == {"a": [], "b": [run_b.id]}
    assert len(subscriptions) == 1


def test_a_lost_subscription_is_reported_to_each_context_for_its_own_runs() -> None:
    """When the shared observer gives up, each context hears about its own runs only; a run
    removed from its context is no longer reported, nor dispatched."""
    shared = SharedCancellationObserver()
    shared.observer = FlowRunCancellingObserver(
        on_cancelling=shared.on_cancelling, on_failure=shared.on_failure
    )
    failed: dict[str, list[set[uuid.UUID]]] = {"a": [], "b": []}
    cancelled: list[uuid.UUID] = []
    watch_a = RunCancellationWatch(cancelled.append, failed["a"].append, shared=shared)
    watch_b = RunCancellationWatch(cancelled.append, failed["b"].append, shared=shared)
    a, b1, b2, gone = (uuid.uuid4() for _ in range(4))
    watch_a.add_in_flight_flow_run_id(a)
    for run in (b1, b2, gone):
        watch_b.add_in_flight_flow_run_id(run)
    watch_b.remove_in_flight_flow_run_id(gone)
    watch_a.remove_in_flight_flow_run_id(b1)  # not its run: changes nothing

    shared.observer._handle_unavailable(RuntimeError("websocket and polling both failed"))
    assert failed == {"a": [{a}], "b": [{b1, b2}]}
    shared.on_cancelling(gone)
    shared.on_cancelling(b2)
    assert cancelled == [b2]


def test_a_callback_that_refuses_the_cancellation_raises_back_to_the_observer() -> None:
    """A context's callback that raises (Prefect's contract: 'not accepted, retry later') raises
    through the shared observer too, so Prefect's observer releases its claim."""
    shared = SharedCancellationObserver()
    shared.observer = FlowRunCancellingObserver(on_cancelling=shared.on_cancelling)

    def refuse(flow_run_id: uuid.UUID) -> None:
        raise RuntimeError(f"not now: {flow_run_id}")

    run = uuid.uuid4()
    RunCancellationWatch(refuse, shared=shared).add_in_flight_flow_run_id(run)
    with pytest.raises(RuntimeError, match="not now"):
        shared.on_cancelling(run)


def test_a_custom_filter_or_interval_keeps_a_private_observer() -> None:
    """Only the worker's default request is shared: a context asking for its own event filter or
    polling interval gets Prefect's observer, as without the change."""
    default = cancel_watch.observer_for_run(on_cancelling=print)
    custom = EventFilter(event=EventNameFilter(name=["prefect.flow-run.Cancelling"]))
    filtered = cancel_watch.observer_for_run(on_cancelling=print, event_filter=custom)
    slower = cancel_watch.observer_for_run(on_cancelling=print, polling_interval=30)
    assert isinstance(default, RunCancellationWatch)
    assert isinstance(filtered, FlowRunCancellingObserver)
    assert isinstance(slower, FlowRunCancellingObserver)


def test_adding_a_run_before_entering_is_refused() -> None:
    """A watch that was never entered cannot take runs: it says to enter it first."""
    with pytest.raises(RuntimeError, match="enter the watch"):
        RunCancellationWatch(print).add_in_flight_flow_run_id(uuid.uuid4())
