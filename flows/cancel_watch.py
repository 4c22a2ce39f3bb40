"""One cancellation subscription per worker process, however many flow runs it has started.

Prefect 3.9's process worker enters a new ``FlowRunExecutorContext`` for every flow run it starts,
and each context a new ``FlowRunCancellingObserver``: its own websocket subscription to the API's
``/events/out`` (a backfill query when it opens, then every event of the server matched against its
filter). In a storm of 100 incidents the two workers held about a hundred of them, and matching the
event stream against them took ~12 % of the API's CPU (README, "Sixteenth session").

``install()`` (run by ``flows/prefect_cli.py``, so only in ``runbook worker``'s process) makes
those contexts share ONE ``FlowRunCancellingObserver``, Prefect's own class, unchanged: each
context gets a ``RunCancellationWatch`` that registers its runs with the shared observer and gets
back their cancellations (the same ``on_cancelling(flow_run_id)`` call, with the observer's
once-per-registration dispatch) and, if the observer fails, the failure report for its own runs.
The observer is opened by the first watch to enter and closed when the last one leaves, both in a
task of its own (it is opened and closed by one task whichever runs come and go). A context asking
for a custom event filter or polling interval gets a private observer, as before.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import uuid
import weakref
from collections.abc import Mapping
from typing import Any

from prefect._internal.observers import (
    FlowRunCancellingObserver,
    OnCancellingCallback,
    OnFailureCallback,
)
from prefect.events.filters import EventFilter

from runbook.envvars import whole_number

logger = logging.getLogger("runbook.cancel_watch")

#: Prefect's default polling interval, the one the worker's contexts use
DEFAULT_POLLING_INTERVAL: float = (
    inspect.signature(FlowRunCancellingObserver).parameters["polling_interval"].default
)


class SharedCancellationObserver:
    """The process's one ``FlowRunCancellingObserver`` and the watches its runs belong to."""

    def __init__(self, polling_interval: float = DEFAULT_POLLING_INTERVAL) -> None:
        self.polling_interval = polling_interval
        self.observer: FlowRunCancellingObserver | None = None
        self._owners: dict[uuid.UUID, RunCancellationWatch] = {}
        self._users = 0
        self._lock = asyncio.Lock()
        self._holder: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()

    # --- the watches' side ------------------------------------------------------------------
    async def acquire(self) -> None:
        """Count one more watch in; the first opens the observer (raises if it cannot)."""
        async with self._lock:
            if self._holder is None:
                ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                self._stop = asyncio.Event()
                self._holder = asyncio.create_task(self._hold(ready), name="cancellation-watch")
                try:
                    await ready
                except BaseException:
                    holder, self._holder = self._holder, None
                    if not holder.done():  # this acquire was cancelled while it opened
                        holder.cancel()
                    raise
            self._users += 1

    async def release(self) -> None:
        """Count one watch out; the last closes the observer and waits until it is closed."""
        async with self._lock:
            self._users -= 1
            if self._users > 0 or self._holder is None:
                return
            holder, self._holder = self._holder, None
            self._stop.set()
            await holder

    def add(self, flow_run_id: uuid.UUID, watch: RunCancellationWatch) -> None:
        if self.observer is None:
            raise RuntimeError("the shared cancellation observer is not open: enter a watch first")
        self._owners[flow_run_id] = watch
        self.observer.add_in_flight_flow_run_id(flow_run_id)

    def remove(self, flow_run_id: uuid.UUID, watch: RunCancellationWatch) -> None:
        if self._owners.get(flow_run_id) is not watch:
            return
        del self._owners[flow_run_id]
        if self.observer is not None:
            self.observer.remove_in_flight_flow_run_id(flow_run_id)

    def forget(self, watch: RunCancellationWatch) -> None:
        """Remove every run ``watch`` still has (its context is leaving)."""
        for flow_run_id in [i for i, owner in self._owners.items() if owner is watch]:
            self.remove(flow_run_id, watch)

    # --- the observer's side ----------------------------------------------------------------
    def on_cancelling(self, flow_run_id: uuid.UUID) -> None:
        """Pass a run's cancellation to the watch that registered it (its exception, if any,
        goes back to the observer, which then releases the claim, as for a private observer)."""
        watch = self._owners.get(flow_run_id)
        if watch is not None:
            watch.on_cancelling(flow_run_id)

    def on_failure(self, flow_run_ids: set[uuid.UUID]) -> None:
        """Tell each watch which of its runs can no longer be watched for cancellation."""
        by_watch: dict[RunCancellationWatch, set[uuid.UUID]] = {}
        for flow_run_id in flow_run_ids:
            watch = self._owners.get(flow_run_id)
            if watch is not None:
                by_watch.setdefault(watch, set()).add(flow_run_id)
        for watch, ids in by_watch.items():
            if watch.on_failure is not None:
                watch.on_failure(ids)

    async def _hold(self, ready: asyncio.Future[None]) -> None:
        observer = FlowRunCancellingObserver(
            on_cancelling=self.on_cancelling,
            polling_interval=self.polling_interval,
            on_failure=self.on_failure,
        )
        try:
            async with observer:
                self.observer = observer
                ready.set_result(None)
                await self._stop.wait()
        except Exception as exc:
            if not ready.done():
                ready.set_exception(exc)
                return
            logger.error("the shared cancellation observer failed", exc_info=exc)
            self.on_failure(set(self._owners))
        except BaseException:
            if not ready.done():
                ready.cancel()
            raise
        finally:
            self.observer = None


_shared: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, SharedCancellationObserver] = (
    weakref.WeakKeyDictionary()
)


def shared_observer() -> SharedCancellationObserver:
    """The running event loop's shared observer (the worker has one loop)."""
    loop = asyncio.get_running_loop()
    if loop not in _shared:
        _shared[loop] = SharedCancellationObserver()
    return _shared[loop]


class RunCancellationWatch:
    """What one executor context uses in place of its own ``FlowRunCancellingObserver``: the same
    calls, served by the process's shared observer."""

    def __init__(
        self,
        on_cancelling: OnCancellingCallback,
        on_failure: OnFailureCallback | None = None,
        shared: SharedCancellationObserver | None = None,
    ) -> None:
        self.on_cancelling = on_cancelling
        self.on_failure = on_failure
        self._shared = shared

    async def __aenter__(self) -> RunCancellationWatch:
        if self._shared is None:
            self._shared = shared_observer()
        await self._shared.acquire()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        shared = self._shared
        if shared is None:
            return
        shared.forget(self)
        await shared.release()

    def add_in_flight_flow_run_id(self, flow_run_id: uuid.UUID) -> None:
        if self._shared is None:
            raise RuntimeError("enter the watch (async with) before adding runs to it")
        self._shared.add(flow_run_id, self)

    def remove_in_flight_flow_run_id(self, flow_run_id: uuid.UUID) -> None:
        if self._shared is not None:
            self._shared.remove(flow_run_id, self)


def observer_for_run(
    on_cancelling: OnCancellingCallback,
    polling_interval: float = DEFAULT_POLLING_INTERVAL,
    event_filter: EventFilter | None = None,
    on_failure: OnFailureCallback | None = None,
) -> RunCancellationWatch | FlowRunCancellingObserver:
    """What ``FlowRunExecutorContext`` gets when it asks for a ``FlowRunCancellingObserver``: a
    watch on the shared one, or a private observer for a custom filter or polling interval."""
    if event_filter is not None or polling_interval != DEFAULT_POLLING_INTERVAL:
        return FlowRunCancellingObserver(
            on_cancelling=on_cancelling,
            polling_interval=polling_interval,
            event_filter=event_filter,
            on_failure=on_failure,
        )
    return RunCancellationWatch(on_cancelling=on_cancelling, on_failure=on_failure)


#: 0 turns the shared watch off: each run's executor context keeps Prefect's own observer (and
#: subscription), as plain ``prefect worker start`` does; 1 (the default) shares one per process
ENV_SHARED = "RUNBOOK_WORKER_SHARED_CANCEL_WATCH"


def shared_watch_wanted(env: Mapping[str, str] | None = None) -> bool:
    """Whether ``ENV_SHARED`` (in ``env``, default ``os.environ``) asks for the shared watch.

    Raises:
        ConfigError: neither blank, 0 nor 1 (the message names the variable and what it takes).
    """
    environ = os.environ if env is None else env
    return whole_number(environ, ENV_SHARED, 1, 0, 1, least_is_off=True) == 1


def install() -> bool:
    """Make this process's executor contexts share one cancellation observer. Returns False (and
    changes nothing) when Prefect's executor module is not the one this was written for."""
    try:
        from prefect.runner import _flow_run_executor as executor
    except ImportError:
        return False
    current = getattr(executor, "FlowRunCancellingObserver", None)
    if current is observer_for_run:
        return True
    if current is not FlowRunCancellingObserver:
        logger.warning(
            "Prefect's executor context no longer builds a FlowRunCancellingObserver by that name;"
            " each run keeps its own cancellation subscription"
        )
        return False
    executor.FlowRunCancellingObserver = observer_for_run  # type: ignore[assignment,misc]
    return True
