"""The gateway's ASGI app: ``POST /hooks/<sender>``, ``GET /healthz``, ``GET /metrics``.

Per request: size and content type, authenticity, parse, then one group commit (raw body, alerts,
incidents and outbox rows together) and only then the 2xx. Answers: 202 stored, 200 a redelivery
that changed nothing, 400 with the reason (raw body kept as a dead letter), 401/403 auth, 413 too
large, 415 not JSON, 503 ledger down (with Retry-After, so Alertmanager and Datadog retry). Nothing
a client sends leads to a 500.

``POST /hooks/<sender>`` is the hot path, so ``GatewayApp`` answers it in plain ASGI (one dict of
headers, the body from ``receive``, one ``send`` of prebuilt headers); everything else, other methods
on the hooks included, goes through Starlette. Both run the same ``Gateway.process``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, MutableMapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import orjson
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from runbook.clock import Clock, SystemClock
from runbook.errors import InvalidTransition, LedgerError, LedgerUnavailableError
from runbook.gateway.auth import AuthFailure, authenticate
from runbook.gateway.committer import GroupCommitter
from runbook.gateway.config import GatewayConfig
from runbook.gateway.dispatcher import Dispatcher, Launcher
from runbook.gateway.lifecycle import FlapTracker, settle_incident
from runbook.gateway.metrics import GatewayMetrics
from runbook.gateway.parsers import PARSERS, ParseError
from runbook.gateway.parsers._common import LowerHeaders, sanitize
from runbook.ledger import AlertIntake, AlertOutcome, Ledger
from runbook.models import Alert, AlertStatus, IncidentStatus

if TYPE_CHECKING:
    from runbook.gateway.flapshare import SharedFlapTracker

log = logging.getLogger("runbook.gateway")
RETRY_AFTER_S = "5"
JSON_TYPES = ("application/json", "text/json", "application/vnd.pagerduty")


Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class TooLarge(Exception):
    """The body is over the configured limit."""


@dataclass
class Answer:
    """What to answer a delivery: status, JSON payload, extra headers."""

    status: int
    payload: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)

    def response(self) -> Response:
        """As a Starlette response."""
        return Response(
            orjson.dumps(self.payload), self.status, self.headers, media_type="application/json"
        )


def _json(status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> Answer:
    return Answer(status, payload, headers or {})


class Gateway:
    """The gateway's state: ledger, config, group commit, dispatcher, flap tracker, metrics.

    Args:
        ledger: the open ledger.
        config: secrets and limits.
        launcher: launches an incident's flow run; None turns the dispatcher off.
        clock: the time source (Grafana's replay window, flapping).
        flaps: the flap tracker (default: this process's own; ``SharedFlapTracker`` when several
            worker processes serve one port).
    """

    def __init__(
        self,
        ledger: Ledger,
        config: GatewayConfig,
        launcher: Launcher | None,
        clock: Clock,
        flaps: FlapTracker | SharedFlapTracker | None = None,
    ) -> None:
        self.ledger = ledger
        self.config = config
        self.clock = clock
        self.metrics = GatewayMetrics()
        self.committer = GroupCommitter(
            ledger,
            batch_max=config.batch_max,
            wait_s=config.batch_wait_s,
            writers=config.commit_writers or (2 if ledger.dialect == "postgresql" else 1),
        )
        self.dispatcher = Dispatcher(ledger, launcher) if launcher is not None else None
        # per key: status changes, and the incident this gateway auto-resolved (flapping reopens it)
        self.flaps = flaps or FlapTracker(config.flap_window, config.flap_changes)
        self._started = False

    def start(self) -> None:
        """Start the group commit and the dispatcher on the running loop (idempotent)."""
        if not self._started:
            self._started = True
            self.committer.start()
            if self.dispatcher is not None:
                self.dispatcher.start()

    async def stop(self) -> None:
        """Commit what is queued, then stop the dispatcher."""
        await self.committer.stop()
        if self.dispatcher is not None:
            await self.dispatcher.stop()

    async def _body(self, headers: Mapping[str, str], chunks: AsyncIterator[bytes]) -> bytes:
        limit = self.config.max_body_bytes
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise TooLarge
        parts: list[bytes] = []
        size = 0
        async for chunk in chunks:
            size += len(chunk)
            if size > limit:
                raise TooLarge
            parts.append(chunk)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    async def process(
        self, source: str, headers: Mapping[str, str], chunks: AsyncIterator[bytes]
    ) -> Answer:
        """One delivery from ``source``, answered only after it is durable (or refused).

        Args:
            source: the sender (the hook's name).
            headers: the request headers, lower-case names.
            chunks: the request body.

        Returns:
            The answer to send.
        """
        started = time.perf_counter()
        self.start()
        answer = await self._handle(source, headers, chunks)
        self.metrics.observe(source, answer.status, time.perf_counter() - started)
        return answer

    async def handle(self, request: Request, source: str) -> Response:
        """``process`` for a Starlette request."""
        answer = await self.process(source, request.headers, request.stream())
        return answer.response()

    async def _handle(
        self, source: str, headers: Mapping[str, str], chunks: AsyncIterator[bytes]
    ) -> Answer:
        content_type = headers.get("content-type", "")
        if not content_type.lower().startswith(JSON_TYPES):
            return self._refuse(source, 415, "unsupported_media_type",
                                "send the body as application/json")  # fmt: skip
        try:
            body = await self._body(headers, chunks)
        except TooLarge:
            return self._refuse(source, 413, "too_large",
                                f"the body is over {self.config.max_body_bytes} bytes")  # fmt: skip
        try:
            authenticate(source, headers, body, self.config, self.clock.now())
        except AuthFailure as failure:
            return self._refuse(source, failure.status, "unauthorized", failure.reason)
        try:
            alerts = [sanitize(a) for a in PARSERS[source](body, headers)]
        except ParseError as error:
            await self._dead_letter(source, str(error), body, headers)
            return self._refuse(source, 400, "bad_request", str(error))
        if not alerts:
            return _json(200, {"status": "ignored", "reason": "no alert in this delivery"})
        now = self.clock.now()
        flapping = {a.dedup_key for a in alerts if self.flaps.observe(a, now)}
        if flapping:
            await self._reopen_flapping(alerts, flapping, now)
        # the raw body goes with the first alert only: a body of many alerts is stored once
        alerts[0].raw_body = body
        try:
            outcomes = await self.committer.submit([AlertIntake(alert=a) for a in alerts])
        except LedgerUnavailableError as error:
            log.warning("ledger unavailable, answering 503: %s", error)
            self.metrics.received.labels(source, "unavailable").inc(len(alerts))
            return _json(503, {"error": "ledger_unavailable", "detail": "retry later"},
                         {"Retry-After": RETRY_AFTER_S})  # fmt: skip
        except LedgerError as error:
            await self._dead_letter(source, f"the ledger refused it: {error}", body, headers)
            return self._refuse(source, 400, "bad_request", f"the ledger refused it: {error}")
        response = self._accepted(source, outcomes)
        settle = {
            o.incident_id: (alert.dedup_key, alert.dedup_key in flapping)
            for alert, o in zip(alerts, outcomes, strict=True)
            if alert.status == AlertStatus.RESOLVED and o.incident_id is not None and not o.duplicate
        }  # fmt: skip
        if settle:
            await self._settle(settle)
        return response

    def _accepted(self, source: str, outcomes: list[AlertOutcome]) -> Answer:
        opened = [o.incident_id for o in outcomes if o.opened]
        dups = sum(1 for o in outcomes if o.duplicate)
        attached = sum(1 for o in outcomes if o.attached)
        other = len(outcomes) - len(opened) - dups - attached
        self.metrics.count_outcomes(source, len(opened), attached, dups, other)
        if opened and self.dispatcher is not None:
            self.dispatcher.wake()
        payload = {
            "status": "duplicate" if dups == len(outcomes) else "accepted",
            "alerts": len(outcomes),
            "duplicates": dups,
            "opened": opened,
            "incidents": sorted({o.incident_id for o in outcomes if o.incident_id is not None}),
        }
        return _json(200 if dups == len(outcomes) else 202, payload)

    async def _settle(self, settle: dict[int, tuple[str, bool]]) -> None:
        # after the commit, before the answer: only for resolved alerts, and deterministic
        for incident_id, (key, flaps) in settle.items():
            result = await asyncio.to_thread(
                settle_incident, self.ledger, incident_id,
                auto_resolve=self.config.auto_resolve, flapping=flaps,
            )  # fmt: skip
            if result == "resolved":
                self.flaps.remember_resolved(key, incident_id, self.clock.now())

    async def _reopen_flapping(
        self, alerts: list[Alert], flapping: set[str], now: datetime
    ) -> None:
        """A flapping key fired again after we auto-resolved its incident: reopen that one."""
        for alert in alerts:
            key = alert.dedup_key
            if alert.status != AlertStatus.FIRING or key not in flapping:
                continue
            resolved = self.flaps.take_resolved(key)
            if resolved is None or now - resolved[1] > self.config.flap_window:
                continue
            with contextlib.suppress(InvalidTransition, LedgerError):
                await asyncio.to_thread(
                    self.ledger.transition, resolved[0], IncidentStatus.TRIAGING,
                    actor="gateway", reason="flapping: it fired again within the flap window",
                )  # fmt: skip

    def _refuse(self, source: str, status: int, error: str, reason: str) -> Answer:
        self.metrics.received.labels(source, error).inc()
        return _json(status, {"error": error, "detail": reason})

    async def _dead_letter(
        self, source: str, reason: str, body: bytes, headers: Mapping[str, str]
    ) -> None:
        try:
            await asyncio.to_thread(self.ledger.dead_letter, source, reason, body, headers)
        except LedgerError as error:  # the 400 stands; the sender's own logs keep the body
            log.warning("could not keep a dead letter from %s: %s", source, error)

    async def healthz(self, request: Request) -> Response:
        """200 with the outbox figures and the answering process (a worker's pid) when the ledger
        answers, else 503."""
        try:
            stats = await asyncio.to_thread(self.ledger.outbox_stats)
        except LedgerError as error:
            return _json(503, {"status": "ledger_unavailable", "detail": str(error)}).response()
        answer = _json(200, {"status": "ok", "ledger": self.ledger.describe(), "outbox": stats,
                             "pid": os.getpid()})  # fmt: skip
        return answer.response()

    async def metrics_page(self, request: Request) -> Response:
        """Prometheus text exposition."""
        stats: dict[str, object] | None
        try:
            stats = await asyncio.to_thread(self.ledger.outbox_stats)
        except LedgerError:
            stats = None
        text = self.metrics.render(stats, self.committer.commits)
        return Response(text, media_type="text/plain; version=0.0.4; charset=utf-8")


class GatewayApp:
    """The ASGI app: ``POST /hooks/<sender>`` in plain ASGI, the rest through Starlette.

    Attributes:
        gateway: the Gateway (also ``state.gateway``).
        routes: the Starlette app (health, metrics, lifespan, 405 for other methods on the hooks).
    """

    def __init__(self, gateway: Gateway, routes: Starlette) -> None:
        self.gateway = gateway
        self.routes = routes
        self._hooks = {f"/hooks/{source}": source for source in PARSERS}

    @property
    def state(self) -> Any:
        """The Starlette app's state (``state.gateway``)."""
        return self.routes.state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        source = self._hooks.get(scope.get("path", "")) if scope["type"] == "http" else None
        if source is None or scope["method"] != "POST":
            await self.routes(scope, receive, send)
            return
        # ASGI header names are lower-case bytes; the first of repeated headers wins
        headers = LowerHeaders()
        for name, value in scope["headers"]:
            headers.setdefault(name.decode("latin-1"), value.decode("latin-1"))
        try:
            answer = await self.gateway.process(source, headers, _chunks(receive))
        except ClientDisconnect:
            return  # the sender went away before its body arrived: nothing stored, no one to answer
        body = orjson.dumps(answer.payload)
        raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        raw += [
            (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in answer.headers.items()
        ]
        await send({"type": "http.response.start", "status": answer.status, "headers": raw})
        await send({"type": "http.response.body", "body": body})


async def _chunks(receive: Receive) -> AsyncIterator[bytes]:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect
        body = message.get("body", b"")
        if body:
            yield body
        if not message.get("more_body", False):
            return


def create_app(
    ledger: Ledger,
    config: GatewayConfig | None = None,
    *,
    launcher: Launcher | None = None,
    clock: Clock | None = None,
    flaps: FlapTracker | SharedFlapTracker | None = None,
) -> GatewayApp:
    """Build the gateway app over an open ledger.

    Args:
        ledger: where alerts, incidents and the outbox live.
        config: secrets and limits (default: from the environment).
        launcher: launches an incident's flow (e.g. ``dispatcher.prefect_launch``); None: no dispatcher.
        clock: the time source (default: real time).
        flaps: the flap tracker shared by worker processes (default: one of this process's own).

    Returns:
        The ASGI app; ``app.state.gateway`` is its Gateway.
    """
    gateway = Gateway(
        ledger, config or GatewayConfig.from_env(), launcher, clock or SystemClock(), flaps
    )

    def hook(source: str) -> Any:
        async def endpoint(request: Request) -> Response:
            return await gateway.handle(request, source)

        return endpoint

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        gateway.start()
        yield
        await gateway.stop()

    routes = [Route(f"/hooks/{s}", hook(s), methods=["POST"]) for s in PARSERS]
    routes += [
        Route("/healthz", gateway.healthz, methods=["GET"]),
        Route("/metrics", gateway.metrics_page, methods=["GET"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.gateway = gateway
    return GatewayApp(gateway, app)
