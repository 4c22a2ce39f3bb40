"""The sandbox ASGI app: every vendor under its own prefix, plus the control API.

/vercel /supabase /supabase-data /slack /teams /pagerduty /statuspage /github /jira /app
/_sandbox/requests   GET: recorded requests, newest last (?vendor=&path=&since=SEQ)
/_sandbox/faults     GET list, POST one FaultRule as JSON, DELETE all (?vendor=)
/_sandbox/scenario   POST {"name": ..., "params": {...}}: inject a named scenario
/_sandbox/state      GET: a JSON summary of the world
/_sandbox/reset      POST: back to the initial world (faults, log and state)
"""

from __future__ import annotations

import importlib
import json
from types import ModuleType
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from runbook.clock import Clock
from runbook.sandbox.core import DEFAULT_TOKEN, FaultRule, World, hold

VENDOR_MODULES = (
    "vercel",
    "supabase",
    "supabase_data",
    "slack",
    "teams",
    "pagerduty",
    "statuspage",
    "github",
    "jira",
    "product_app",
)


def load_vendors() -> dict[str, ModuleType]:
    """Import every vendor module and key it by its NAME (its path prefix)."""
    mods = {}
    for modname in VENDOR_MODULES:
        mod = importlib.import_module(f"runbook.sandbox.{modname}")
        mods[mod.NAME] = mod
    return mods


class _FaultAndRecord:
    """ASGI middleware: record each vendor request, then inject a matching fault, if any."""

    def __init__(self, app: ASGIApp, world: World, vendors: dict[str, ModuleType]) -> None:
        self.app = app
        self.world = world
        self.vendors = vendors

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        parts = path.lstrip("/").split("/", 1)
        vendor = parts[0]
        if vendor not in self.vendors:
            await self.app(scope, receive, send)
            return
        sub_path = "/" + (parts[1] if len(parts) > 1 else "")
        body = b""
        more = True
        while more:
            msg = await receive()
            body += msg.get("body", b"")
            more = msg.get("more_body", False)
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        rec = self.world.record(
            vendor,
            scope["method"],
            sub_path,
            scope.get("query_string", b"").decode(),
            headers,
            body,
        )

        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return {"type": "http.disconnect"}

        async def capture(message: Message) -> None:
            if message["type"] == "http.response.start":
                rec.status = message["status"]
            await send(message)

        fault = self.world.pick_fault(vendor, scope["method"], sub_path)
        if fault is not None:
            rec.fault = fault.kind
            mod = self.vendors[vendor]
            if fault.kind in ("latency", "timeout"):
                await hold(fault.latency_s or (30.0 if fault.kind == "timeout" else 0.0))
            elif fault.kind == "error":
                resp = mod.error_response(fault.status or 503, "sandbox injected fault")
                await resp(scope, replay, capture)
                return
            elif fault.kind == "rate_limit":
                resp = mod.error_response(
                    fault.status or 429, "rate limited (sandbox)", retry_after=fault.retry_after
                )
                await resp(scope, replay, capture)
                return
        await self.app(scope, replay, capture)


def _control_routes(world: World, vendors: dict[str, ModuleType]) -> list[BaseRoute]:
    async def get_requests(request: Request) -> Response:
        vendor = request.query_params.get("vendor")
        path = request.query_params.get("path")
        since = int(request.query_params.get("since", "0"))
        rows = [r.to_dict() for r in world.requests_for(vendor, path) if r.seq > since]
        return JSONResponse(rows)

    async def faults(request: Request) -> Response:
        if request.method == "GET":
            return JSONResponse([f.to_dict() for f in world.faults])
        if request.method == "DELETE":
            world.clear_faults(request.query_params.get("vendor"))
            return JSONResponse({"ok": True})
        try:
            data: dict[str, Any] = json.loads(await request.body())
            rule = world.add_fault(FaultRule(**data))
        except (ValueError, TypeError) as exc:
            return JSONResponse({"error": f"bad fault rule: {exc}"}, status_code=400)
        return JSONResponse(rule.to_dict(), status_code=201)

    async def scenario(request: Request) -> Response:
        from runbook.sandbox import scenarios

        try:
            data = json.loads(await request.body())
            result = scenarios.apply_scenario(world, data["name"], **data.get("params", {}))
        except (ValueError, KeyError, TypeError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse(result)

    async def state(request: Request) -> Response:
        from runbook.sandbox import scenarios

        return JSONResponse(scenarios.summarize(world))

    async def reset(request: Request) -> Response:
        reset_world(world, vendors)
        return JSONResponse({"ok": True})

    return [
        Route("/requests", get_requests, methods=["GET"]),
        Route("/faults", faults, methods=["GET", "POST", "DELETE"]),
        Route("/scenario", scenario, methods=["POST"]),
        Route("/state", state, methods=["GET"]),
        Route("/reset", reset, methods=["POST"]),
    ]


def reset_world(world: World, vendors: dict[str, ModuleType] | None = None) -> None:
    """Clear faults and the request log and rebuild every vendor's initial state."""
    vendors = vendors or load_vendors()
    if world.state:
        from runbook.sandbox.scenarios import end_slow_query

        end_slow_query(world)  # a real backend held by db-degradation must not outlive the reset
    world.faults.clear()
    world.requests.clear()
    world.state.clear()
    world.rng.seed(world.seed)
    for mod in vendors.values():
        mod.init_state(world)


def create_app(
    world: World | None = None,
    *,
    token: str = DEFAULT_TOKEN,
    seed: int | None = None,
    scenario: str | None = None,
    clock: Clock | None = None,
    database_url: str | None = None,
) -> Starlette:
    """Build the sandbox ASGI app. ``app.state.world`` is the World it serves.

    Args:
        world: an existing World to serve (its token/seed/clock win over the other arguments).
        token: the credential every vendor accepts.
        seed: makes every random choice (faults, simulated traffic) repeatable.
        scenario: a named scenario to inject at start (see runbook.sandbox.scenarios).
        clock: the clock the world reads (compressed in drills).
        database_url: a real PostgreSQL for scenarios that hold real backends.
    """
    if world is None:
        world = World(token=token, seed=seed, database_url=database_url)
        if clock is not None:
            world.clock = clock
    vendors = load_vendors()
    reset_world(world, vendors)
    routes: list[BaseRoute] = [
        Mount(f"/{name}", routes=mod.routes(world)) for name, mod in vendors.items()
    ]
    routes.append(Mount("/_sandbox", routes=_control_routes(world, vendors)))
    app = Starlette(routes=routes)
    app.state.world = world
    app.add_middleware(_FaultAndRecord, world=world, vendors=vendors)
    if scenario:
        from runbook.sandbox import scenarios

        scenarios.apply_scenario(world, scenario)
    return app
