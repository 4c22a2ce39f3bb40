"""The outbox dispatcher: launch each opened incident's flow run, retrying while Prefect is away.

The ledger writes a ``launch_incident`` outbox row in the same transaction that opens an incident;
this drains them. A launch creates a run of the ``incident-response/runbook`` deployment with
the idempotency key ``incident-<id>``, so a launch retried after a crash (or by two dispatchers)
makes one flow run. Failures back off exponentially (capped) and stay in the outbox: nothing is
lost while Prefect is down, and the sender already got its 202.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar
from uuid import UUID

from runbook.errors import LedgerError
from runbook.ledger import LAUNCH_INCIDENT, Ledger, OutboxItem
from runbook.recovery import launch_key

if TYPE_CHECKING:
    from prefect.client.orchestration import PrefectClient

INCIDENT_DEPLOYMENT = "incident-response/runbook"
log = logging.getLogger("runbook.gateway")

T = TypeVar("T")
Launcher = Callable[[int], Awaitable[None]]


class PrefectLauncher:
    """Launch the incident flow through Prefect's API.

    A launch is one request: the deployment's id is looked up by name once per API and kept (a
    deployment keeps its id when it is deployed again, which updates it by name), and the run is
    created from it. ``arun_deployment`` would read the deployment again for every run, and in a
    storm every request waits in a busy API's queue. A deployment deleted and made again has a new
    id: the create answers 404, the name is looked up again and the create tried once more.

    Args:
        api_url: the Prefect API (default: the active profile's ``PREFECT_API_URL``).
        deployment: ``<flow>/<deployment>`` to launch.
    """

    def __init__(self, api_url: str | None = None, deployment: str = INCIDENT_DEPLOYMENT) -> None:
        self.api_url = api_url
        self.deployment = deployment
        self._deployment_ids: dict[str, UUID] = {}  # API URL -> the deployment's id there

    async def parameters(self, incident_id: int) -> dict[str, Any]:
        """The flow run's parameters: the incident id (the deployment's defaults do the rest)."""
        return {"incident_id": incident_id}

    async def __call__(self, incident_id: int, attempt: int = 0) -> None:
        """Create the flow run for ``incident_id`` (one per incident and attempt, by its idempotency
        key: ``runbook.recovery.launch_key``; attempt 0 is the gateway's launch, later ones the
        watcher's relaunches of a run that crashed), scheduled to start now.

        Raises:
            Exception: whatever Prefect's client raises (unreachable API, missing deployment ...).
        """
        from prefect.client.orchestration import PrefectClient, get_client

        parameters = await self.parameters(incident_id)
        key = launch_key(incident_id, attempt)
        client = PrefectClient(self.api_url) if self.api_url else get_client()
        async with client:
            api = str(client.api_url)
            known = self._deployment_ids.get(api)
            if known is not None and await self._create(client, known, parameters, key):
                return
            self._deployment_ids.pop(api, None)  # unknown, or made again since: a new id
            deployment = await client.read_deployment_by_name(self.deployment)  # 404: raises
            self._deployment_ids[api] = deployment.id
            if not await self._create(client, deployment.id, parameters, key):
                raise LaunchError(f"deployment {self.deployment} was deleted while launching")

    @staticmethod
    async def _create(
        client: PrefectClient, deployment_id: UUID, parameters: dict[str, Any], key: str
    ) -> bool:
        """Create the run; False when no deployment has that id (any other failure raises)."""
        from prefect.exceptions import PrefectHTTPStatusError
        from prefect.states import Scheduled

        try:
            await client.create_flow_run_from_deployment(
                deployment_id, parameters=parameters, state=Scheduled(), idempotency_key=key
            )
        except PrefectHTTPStatusError as error:
            if error.response.status_code == 404:
                return False
            raise
        return True


class LaunchError(RuntimeError):
    """The launch did not happen (the dispatcher tries it again later)."""


prefect_launch = PrefectLauncher()


class Dispatcher:
    """Drain ``launch_incident`` outbox rows through a launcher.

    Args:
        ledger: the open ledger.
        launcher: ``async (incident_id) -> None``; raises when the launch did not happen.
        poll_s: how often to look at the outbox when nobody wakes the dispatcher.
        backoff_s: the first retry delay; it doubles per attempt up to ``max_backoff_s``.
        max_backoff_s: the longest delay between tries.
        concurrency: launches in flight at once. Each is a few Prefect API calls; one at a time, a
            storm of 100 incidents on a loaded machine took 83 s (p95) to create its last runs.
    """

    def __init__(
        self,
        ledger: Ledger,
        launcher: Launcher = prefect_launch,
        *,
        poll_s: float = 1.0,
        backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
        concurrency: int = 8,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, not {concurrency}")
        self.ledger = ledger
        self.launcher = launcher
        self.poll_s = poll_s
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.concurrency = concurrency
        self.launched = 0
        self.failures = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gateway-outbox")

    def wake(self) -> None:
        """Look at the outbox now (an incident was just opened)."""
        self._wake.set()

    def start(self) -> None:
        """Run the dispatch loop on the running event loop."""
        if self._task is None:
            self._stopping = False
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Stop the loop; undelivered rows stay in the outbox for the next start."""
        # the flag as well as the cancel: Python 3.11's wait_for can swallow a cancellation that
        # lands as its wait ends (gh-86296), and the loop then went on polling forever
        self._stopping = True
        if self._task is not None:
            self._wake.set()
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._executor.shutdown(wait=False)

    def delay(self, attempts: int) -> float:
        """Seconds before the next try after ``attempts`` failed ones."""
        return float(min(self.max_backoff_s, self.backoff_s * 2 ** max(attempts - 1, 0)))

    async def drain_once(self, limit: int = 50) -> int:
        """Claim available rows and launch them, ``concurrency`` at a time.

        Args:
            limit: the most rows to claim.

        Returns:
            How many launches succeeded.
        """
        items = await self._call(self.ledger.outbox_claim, limit)
        # another part of the project owns other kinds; their leases run out
        mine = [i for i in items if i.kind == LAUNCH_INCIDENT and i.incident_id is not None]
        slots = asyncio.Semaphore(self.concurrency)
        done = await asyncio.gather(*(self._launch(item, slots) for item in mine))
        return sum(done)

    async def _launch(self, item: OutboxItem, slots: asyncio.Semaphore) -> bool:
        assert item.incident_id is not None  # noqa: S101 - drain_once passes launches only
        async with slots:
            try:
                await self.launcher(item.incident_id)
            except Exception as error:  # noqa: BLE001 - any failure means "try again later"
                reason = f"{type(error).__name__}: {error}"
                log.warning(
                    "launch of incident %s failed, will retry: %s", item.incident_id, reason
                )
                await self._call(
                    self.ledger.outbox_retry, item.id, reason, self.delay(item.attempts)
                )
                # counted once the retry is recorded: whoever reads the count sees the row's next
                # try already scheduled (a test advancing the clock at once raced the write)
                self.failures += 1
                return False
        await self._call(self.ledger.outbox_done, item.id)
        self.launched += 1
        return True

    async def _run(self) -> None:
        while not self._stopping:
            try:
                await self.drain_once()
            except LedgerError as error:
                log.warning("outbox unavailable, will retry: %s", error)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_s)
            self._wake.clear()

    async def _call(self, fn: Callable[..., T], *args: object) -> T:
        # the ledger's calls are sync and may wait on the database: keep them off the event loop
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
