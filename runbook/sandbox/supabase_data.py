"""Sandbox: a Supabase project's data plane (``https://<ref>.supabase.co``) and the traffic it serves.

Mounted under ``/supabase-data``. Every request needs ``apikey: <world.token_for(NAME)>`` (header or query),
else Supabase's own 401. Routes:

- ``GET /auth/v1/health``: GoTrue's answer, or 503 while auth is down.
- ``POST /auth/v1/token``: a token, 429 while auth is rate limiting, 503 while it is down.
- ``GET /rest/v1/``: PostgREST's OpenAPI root, 503 while the db or rest service is unhealthy.
- ``POST /functions/v1/{slug}``: 200 JSON from a healthy function; a slow one holds
  ``function_timeout_s`` (real seconds, 2.0 by default; ``set_function_timeout``) and then answers
  504, so a client with a shorter timeout sees a timeout.

The project's state (functions, auth degradation, services) lives in ``runbook.sandbox.supabase``.
This module also simulates the traffic the Management API's ``logs.all`` and
``functions.combined-stats`` report on: log rows are records of this plane's traffic (gateway, edge
functions, GoTrue, Postgres), so their simulation sits next to it. The sandbox runs no SQL; a row
carries the columns a typical query selects (``id``, ``timestamp`` in µs, ``event_message``, the
table's usual flat fields such as ``status_code``) plus the nested ``metadata`` Supabase stores.
"""

from __future__ import annotations

import json
import math
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from runbook.sandbox import supabase as project
from runbook.sandbox.core import World, hold

NAME = "supabase-data"
DEFAULT_FUNCTION_TIMEOUT_S = 2.0
SLOW_EXECUTION_MS = (
    60_000.0  # the world's notion of a timed-out invocation (the hold is compressed)
)
LOG_TABLES = ("edge_logs", "function_edge_logs", "function_logs", "auth_logs", "postgres_logs")
# log rows per wall-clock minute per table (a small production app). A drill compresses the runbook's
# time 100x but not the logs', so a fault is only seconds old when triage reads them: at 20 rows a
# minute its 30-second window held one or two rows after an auth failure began, and whether 429s
# "dominated" was a coin toss (the auth-failure drill failed on a slower machine)
ROWS_PER_MINUTE = 240
DEFAULT_LIMIT, MAX_LIMIT = 100, 1000
# interval -> (number of buckets, bucket length in seconds)
INTERVALS = {"15min": (15, 60), "1hr": (60, 60), "3hr": (3, 3600), "1day": (24, 3600)}


@dataclass
class DataPlaneState:
    """Knobs of the data plane."""

    function_timeout_s: float = DEFAULT_FUNCTION_TIMEOUT_S


def init_state(world: World) -> None:
    """Put the data plane's knobs in ``world.state``."""
    world.state[NAME] = DataPlaneState()


def get_state(world: World) -> DataPlaneState:
    """The data plane's state, created on first use."""
    if NAME not in world.state:
        init_state(world)
    st: DataPlaneState = world.state[NAME]
    return st


def set_function_timeout(world: World, seconds: float) -> None:
    """How long (real seconds) a slow function holds a request before its 504."""
    get_state(world).function_timeout_s = max(0.0, seconds)


def to_us(when: datetime) -> int:
    """Microseconds since the epoch, the unit of Supabase log timestamps."""
    return int(when.timestamp() * 1_000_000)


def record_invocation(world: World, slug: str, status: int, execution_time_ms: float) -> None:
    """Remember one real invocation so the function logs show it."""
    st = project.get_state(world)
    fn = st.functions[slug]
    st.invocations.append(
        {
            "timestamp": to_us(world.clock.now()),
            "function_id": fn.id,
            "slug": slug,
            "version": fn.current.version,
            "status_code": status,
            "execution_time_ms": execution_time_ms,
        }
    )


# --- HTTP ------------------------------------------------------------------------------------------


def error_response(status: int, message: str, retry_after: float | None = None) -> Response:
    """The data plane's error body: ``{"message": ...}`` (Kong and the edge runtime)."""
    headers = {"Retry-After": str(math.ceil(retry_after))} if retry_after is not None else None
    return JSONResponse({"message": message}, status_code=status, headers=headers)


def _key_problem(world: World, request: Request) -> Response | None:
    key = request.headers.get("apikey") or request.query_params.get("apikey")
    if not key:
        hint = "No `apikey` request header or url param was found."
        return JSONResponse({"message": "No API key found in request", "hint": hint}, 401)
    if key != world.token_for(NAME):
        hint = "Double check your Supabase `anon` or `service_role` API key."
        return JSONResponse({"message": "Invalid API key", "hint": hint}, 401)
    return None


def _guarded(world: World, handler: Any) -> Any:
    async def endpoint(request: Request) -> Response:
        problem = _key_problem(world, request)
        if problem is not None:
            return problem
        resp: Response = await handler(request)
        return resp

    return endpoint


def routes(world: World) -> list[BaseRoute]:
    """The data plane's routes, paths as Supabase's own."""

    async def auth_health(request: Request) -> Response:
        if "down" in project.auth_degradation(world):
            return error_response(503, "An invalid response was received from the upstream server")
        return JSONResponse(project.GOTRUE_INFO)

    async def auth_token(request: Request) -> Response:
        degraded = project.auth_degradation(world)
        if "down" in degraded:
            return error_response(503, "An invalid response was received from the upstream server")
        if "rate_limit" in degraded:
            body = {
                "code": 429,
                "error_code": "over_request_rate_limit",
                "msg": "Request rate limit reached",
            }
            return JSONResponse(body, status_code=429)
        token = {"access_token": "sandbox-jwt", "token_type": "bearer", "expires_in": 3600}
        return JSONResponse(token)

    async def rest_root(request: Request) -> Response:
        for service in ("db", "rest"):
            if not project.service_health(world, service)["healthy"]:
                return error_response(503, f"{service} is unavailable")
        info = {"title": "standard public schema", "version": "12.2.0"}
        return JSONResponse({"swagger": "2.0", "info": info, "basePath": "/", "paths": {"/": {}}})

    async def invoke(request: Request) -> Response:
        slug = request.path_params["slug"]
        fn = project.get_state(world).functions.get(slug)
        if fn is None or fn.status != "ACTIVE":
            body = {"code": "NOT_FOUND", "message": "Requested function was not found"}
            return JSONResponse(body, status_code=404)
        auth = request.headers.get("authorization")
        if fn.verify_jwt and auth != f"Bearer {world.token_for(NAME)}":
            msg = "Missing authorization header" if not auth else "Invalid JWT"
            return JSONResponse({"code": 401, "message": msg}, status_code=401)
        if fn.current.slow:
            # recorded first: the invocation happened even if the caller gives up during the hold
            record_invocation(world, slug, 504, SLOW_EXECUTION_MS)
            await hold(get_state(world).function_timeout_s)
            return error_response(504, "Function timed out: wall clock time limit reached")
        record_invocation(world, slug, 200, round(world.rng.uniform(40, 250), 1))
        return JSONResponse({"ok": True, "function": slug, "version": fn.current.version})

    return [
        Route("/auth/v1/health", _guarded(world, auth_health), methods=["GET"]),
        Route("/auth/v1/token", _guarded(world, auth_token), methods=["POST"]),
        Route("/rest/v1/", _guarded(world, rest_root), methods=["GET"]),
        Route("/functions/v1/{slug}", _guarded(world, invoke), methods=["GET", "POST"]),
    ]


# --- simulated traffic: logs.all and functions.combined-stats ---------------------------------


def _app_value(world: World, name: str) -> Any:
    """A value of the product app's state (a dict or a dataclass), if the app is there."""
    for key in ("app", "product_app"):
        app = world.state.get(key)
        if app is None:
            continue
        value = app.get(name) if isinstance(app, dict) else getattr(app, name, None)
        if value is not None:
            return value
    return None


@dataclass
class _Traffic:
    """What the simulated rows depend on, read once per query."""

    world: World
    st: project.SupabaseState
    fns: list[project.EdgeFunctionState]
    error_types: dict[str, float]
    error_rate: float

    @classmethod
    def read(cls, world: World, sql: str = "") -> _Traffic:
        st = project.get_state(world)
        fns = list(st.functions.values())
        named = [f for f in fns if f"'{f.id}'" in sql or f"'{f.slug}'" in sql]
        # the app keeps {type: weight} (or a plain list) and an extra_error_rate; accept either
        raw = _app_value(world, "error_types")
        types = {str(k): float(v) for k, v in raw.items() if v} if isinstance(raw, dict) else {}
        if isinstance(raw, list | tuple | set):
            types = {str(t): 1.0 for t in raw}
        rate = _app_value(world, "error_rate")
        if not isinstance(rate, int | float):
            rate = _app_value(world, "extra_error_rate")
        if not isinstance(rate, int | float):
            rate = 0.3 if types else 0.0
        return cls(world, st, named or fns, types, min(1.0, max(0.0, float(rate))))

    def error_type(self) -> str:
        """One of the app's error types, by weight."""
        if not self.error_types:
            return "internal error"
        names = list(self.error_types)
        return self.world.rng.choices(names, weights=list(self.error_types.values()))[0]

    def auth_at(self, ts: int) -> set[str]:
        auth = self.st.auth
        if auth.since is None or ts < to_us(auth.since):
            return set()
        return set(auth.degraded)

    def version_at(self, fn: project.EdgeFunctionState, ts: int) -> project.FunctionVersion | None:
        live = None
        for v in fn.history:
            if to_us(v.deployed_at) <= ts:
                live = v
        return live

    def call(self, fn: project.EdgeFunctionState, ts: int) -> tuple[int, float, int]:
        """(status, execution ms, version) of an invocation of ``fn`` at ``ts``."""
        rng = self.world.rng
        v = self.version_at(fn, ts)
        if v is not None and v.slow:
            return rng.choice((504, 546)), round(rng.uniform(59_500, 60_500), 1), v.version
        return 200, round(rng.uniform(40, 400), 1), v.version if v else 0


def _row(world: World, ts: int, message: str, flat: dict[str, Any]) -> dict[str, Any]:
    rid = str(uuid.UUID(int=world.rng.getrandbits(128), version=4))
    return {"id": rid, "timestamp": ts, "event_message": message, **flat, "metadata": [dict(flat)]}


def _edge_row(t: _Traffic, ts: int) -> dict[str, Any]:
    rng, host = t.world.rng, f"https://{t.st.ref}.supabase.co"
    kind = rng.choice(("rest", "rest", "auth", "functions", "storage"))
    method, status, error = "GET", 200, None
    if kind == "auth":
        method, path = "POST", "/auth/v1/token?grant_type=refresh_token"
        auth = t.auth_at(ts)
        status = 503 if "down" in auth else 429 if "rate_limit" in auth else 200
    elif kind == "functions" and t.fns:
        fn = rng.choice(t.fns)
        method, path = "POST", f"/functions/v1/{fn.slug}"
        status = t.call(fn, ts)[0]
    elif kind == "storage":
        path = "/storage/v1/object/public/avatars/u42.png"
    else:
        path = rng.choice(("/rest/v1/orders?select=*", "/rest/v1/profiles?id=eq.42"))
        if rng.random() < t.error_rate:
            status, error = 500, t.error_type()
    flat = {"method": method, "path": path, "status_code": status, "error": error}
    return _row(t.world, ts, f"{method} | {status} | 10.0.0.8 | {host}{path} | supabase-js", flat)


def _function_edge_row(t: _Traffic, ts: int) -> dict[str, Any]:
    fn = t.world.rng.choice(t.fns)
    status, ms, version = t.call(fn, ts)
    flat = {
        "function_id": fn.id,
        "slug": fn.slug,
        "version": version,
        "method": "POST",
        "status_code": status,
        "execution_time_ms": ms,
    }
    url = f"https://{t.st.ref}.supabase.co/functions/v1/{fn.slug}"
    return _row(t.world, ts, f"POST | {status} | {url}", flat)


def _function_log_row(t: _Traffic, ts: int) -> dict[str, Any]:
    rng = t.world.rng
    fn = rng.choice(t.fns)
    v = t.version_at(fn, ts)
    level, event_type = "info", "Log"
    if v is not None and v.slow:
        level, event_type = "error", "Shutdown"
        msg = "wall clock time limit reached: the function was terminated after 60000ms"
    elif t.error_types and rng.random() < t.error_rate:
        level, msg = "error", f"{t.error_type()}: request failed"
    else:
        msg = rng.choice(("booted (time: 21ms)", "Listening on http://localhost:9999/", "done"))
    flat = {
        "function_id": fn.id,
        "version": v.version if v else 0,
        "level": level,
        "event_type": event_type,
    }
    return _row(t.world, ts, msg, flat)


def _auth_row(t: _Traffic, ts: int) -> dict[str, Any]:
    rng = t.world.rng
    auth = t.auth_at(ts)
    path, level, error = rng.choice(("/token", "/user", "/otp")), "info", None
    if "down" in auth:
        status, msg, error, level = 503, "database is unreachable", "unexpected_failure", "error"
    elif "rate_limit" in auth and rng.random() < 0.7:
        # A rate-limited auth service refuses most requests and lets the rest through: the fault
        # shows as 429s and successes, never as other errors a triage could mistake it for.
        status, msg, error, level = (
            429,
            "429: Request rate limit reached",
            "over_request_rate_limit",
            "warning",
        )
    else:
        status, msg = 200, "request completed"
    flat = {"level": level, "status": status, "path": path, "msg": msg, "error": error}
    return _row(t.world, ts, json.dumps(flat), flat)


def _postgres_row(t: _Traffic, ts: int) -> dict[str, Any]:
    msg = t.world.rng.choice(
        (
            "connection received: host=10.0.0.5 port=43122",
            "connection authorized: user=authenticator database=postgres application_name=PostgREST",
            "checkpoint complete: wrote 112 buffers (0.7%)",
        )
    )
    return _row(t.world, ts, msg, {"error_severity": "LOG", "user_name": "authenticator"})


_GENERATORS = {
    "edge_logs": _edge_row,
    "function_edge_logs": _function_edge_row,
    "function_logs": _function_log_row,
    "auth_logs": _auth_row,
    "postgres_logs": _postgres_row,
}


def _parse_ts(value: str | None) -> datetime | None:
    if not value:
        return None
    when = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _logs_error(message: str) -> dict[str, Any]:
    return {"error": {"code": 400, "message": message, "status": "INVALID_ARGUMENT"}}


def logs_all(world: World, params: dict[str, str]) -> tuple[int, dict[str, Any]]:
    """Answer ``logs.all``: (HTTP status, body). Missing sql or bad timestamps are 400s; an
    unknown table is an in-body ``error`` (as a failed query is)."""
    sql = (params.get("sql") or "").strip()
    if not sql:
        return 400, _logs_error("sql is required: a SELECT on one of the log tables")
    try:
        end = _parse_ts(params.get("iso_timestamp_end")) or world.clock.now()
        start = _parse_ts(params.get("iso_timestamp_start")) or end - timedelta(minutes=1)
    except ValueError as exc:
        return 400, _logs_error(f"iso_timestamp_start/end must be ISO 8601 timestamps: {exc}")
    if start > end:
        return 400, _logs_error("iso_timestamp_start is after iso_timestamp_end")
    tables = re.findall(r"\b(?:from|join)\s+`?([A-Za-z_][\w.]*)", sql, flags=re.IGNORECASE)
    table = next((name for name in tables if name in LOG_TABLES), None)
    if table is None:
        return 200, {
            "result": [],
            **_logs_error(f"no known log table in the query; use {LOG_TABLES}"),
        }
    limit_match = re.search(r"\blimit\s+(\d+)", sql, flags=re.IGNORECASE)
    limit = min(int(limit_match.group(1)) if limit_match else DEFAULT_LIMIT, MAX_LIMIT)
    traffic = _Traffic.read(world, sql)
    start_us, end_us = to_us(start), to_us(end)
    n = min(limit, max(1, round((end_us - start_us) / 60e6 * ROWS_PER_MINUTE)))
    stamps = [int(world.rng.uniform(start_us, end_us)) for _ in range(n)]
    needs_functions = table in ("function_edge_logs", "function_logs")
    rows = (
        []
        if needs_functions and not traffic.fns
        else [_GENERATORS[table](traffic, ts) for ts in stamps]
    )
    if table == "function_edge_logs":
        ids = {f.id for f in traffic.fns}
        rows += [
            _row(world, inv["timestamp"], f"POST | {inv['status_code']} | {inv['slug']}", inv)
            for inv in traffic.st.invocations
            if inv["function_id"] in ids and start_us <= inv["timestamp"] <= end_us
        ]
    rows.sort(key=lambda r: r["timestamp"], reverse=True)
    return 200, {"result": rows[:limit], "error": None}


def combined_stats(world: World, params: dict[str, str]) -> tuple[int, dict[str, Any]]:
    """Answer ``functions.combined-stats``: per-bucket counts and execution times, oldest first."""
    interval, function_id = params.get("interval"), params.get("function_id")
    if interval not in INTERVALS or not function_id:
        return 400, {"message": f"function_id and interval ({'|'.join(INTERVALS)}) are required"}
    traffic = _Traffic.read(world)
    fn = next((f for f in traffic.fns if function_id in (f.id, f.slug)), None)
    if fn is None:
        return 200, {"result": []}
    count, size = INTERVALS[interval]
    now = world.clock.now().timestamp()
    last = int(now // size) * size
    rng, rows = world.rng, []
    for i in range(count):
        bucket = last - (count - 1 - i) * size
        ts = to_us(datetime.fromtimestamp(min(bucket + size, now), UTC))
        status, ms, version = traffic.call(fn, ts)
        requests = rng.randint(20, 40) * (size // 60) if version else 0
        server = round(requests * rng.uniform(0.9, 1.0)) if status >= 500 else 0
        client = min(requests - server, rng.randint(0, 1))
        rows.append(
            {
                "timestamp": bucket * 1_000_000,
                "requests_count": requests,
                "success_count": requests - server - client,
                "redirect_count": 0,
                "client_err_count": client,
                "server_err_count": server,
                "avg_execution_time": ms if requests else 0.0,
                "max_execution_time": round(ms * (1.01 if status >= 500 else 3.0), 1)
                if requests
                else 0.0,
            }
        )
    return 200, {"result": rows}
