"""The sandbox's product app: a public health URL and a Prometheus ``/metrics`` page (under ``/app``).

Traffic is simulated, deterministically: each time the app is looked at (a scrape, a health check,
a production switch), the counters advance by the world-clock time elapsed since the last advance at
``RPS`` requests per second, split into errors and a latency histogram by the *current* effective
state. That state combines what the other sandbox systems say:

- the Vercel deployment serving production (its hidden ``error_rate`` / ``p95_ms``);
- Supabase auth and slow edge functions (``runbook.sandbox.supabase``, read defensively);
- ``world.state["db"]`` (database degradation set by the ``db-degradation`` scenario; while its real
  PostgreSQL backend lives, the app stays degraded; the app looks at most once a second);
- ``extra_error_rate`` / ``error_types`` on this module's own state (the ``high-error-rate`` scenario).

No randomness: the same clock readings give the same counters.
"""

from __future__ import annotations

import asyncio
import importlib
import math
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from runbook.sandbox import vercel
from runbook.sandbox.core import World

NAME = "app"
RPS = 500.0  # enough requests that a compressed (sub-second) window still measures rates and p95
EDGE_RPS = 5.0
BASE_ERROR_RATE = 0.0005
BASE_P95_MS = 180.0
DB_CONNECTIONS_MAX = 60
DEFAULT_FUNCTIONS = ("generate-summary", "send-email", "transcribe")
BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4)
BUCKETS += (0.5, 0.75, 1.0, 1.5, 2.0, 2.5, 3.0, 5.0, 7.5, 10.0)
# Latency is log-normal; this spread puts the median at about 40 % of the p95.
_SIGMA = 0.55
_Z95 = 1.6448536269514722
AUTH_ERROR_RATE = 0.04
SLOW_FUNCTION_ERROR_RATE = 0.01
SLOW_FUNCTION_P95_MS = 1500.0
DB_ERROR_RATE = 0.02


@dataclass
class AppState:
    """Counters of the simulated traffic, and the knobs scenarios turn.

    Supports ``state["error_types"]`` / ``state.get(...)`` as well as attributes, so other
    sandbox modules may read it like a dict.
    """

    last_advance: datetime
    requests: float = 0.0
    errors: dict[str, float] = field(default_factory=dict)
    duration_sum: float = 0.0
    buckets: list[float] = field(default_factory=lambda: [0.0] * len(BUCKETS))
    edge: dict[tuple[str, str], float] = field(default_factory=dict)
    extra_error_rate: float = 0.0
    error_types: dict[str, int] = field(default_factory=dict)
    db_checked_at: float = 0.0

    def __getitem__(self, key: str) -> Any:
        return getattr(self, key)

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self, key, default)


@dataclass(frozen=True)
class Effective:
    """What users experience right now."""

    error_rate: float
    p95_ms: float
    status: str  # "ok" | "degraded" | "down"
    checks: dict[str, str]
    causes: dict[str, float]  # error type -> its share of requests
    slow_functions: frozenset[str]
    db_degraded: bool
    deployment: str | None

    @property
    def availability(self) -> float:
        return 1.0 - self.error_rate


def _supabase(func: str, world: World, default: Any) -> Any:
    """Call ``runbook.sandbox.supabase.<func>(world)``; ``default`` while that module is incomplete."""
    if "supabase" not in world.state:
        return default  # not mounted (tests of this module alone): never create its state from here
    try:
        supabase = importlib.import_module("runbook.sandbox.supabase")
        return getattr(supabase, func)(world)
    except (ImportError, AttributeError, KeyError, TypeError):
        return default


def edge_functions(world: World) -> list[str]:
    """The edge functions whose invocations the app reports (Supabase's, when it has them)."""
    names: set[str] = set()
    sb = world.state.get("supabase")
    functions = getattr(sb, "functions", None) if sb is not None else None
    if isinstance(functions, dict):
        names.update(str(k) for k in functions)
    names.update(slow_functions(world))
    return sorted(names) or list(DEFAULT_FUNCTIONS)


def slow_functions(world: World) -> set[str]:
    return set(_supabase("slow_functions", world, set()) or set())


def app_state(world: World) -> AppState:
    state: AppState = world.state[NAME]
    return state


def effective(world: World) -> Effective:
    """Combine every system's state into the error rate and p95 users see now."""
    causes: dict[str, float] = {}
    checks = {"deployment": "ok", "database": "ok", "auth": "ok", "edge_functions": "ok"}
    dep = vercel.current_production(world)
    if dep is not None and dep.error_rate is not None:
        causes["TypeError"] = dep.error_rate
    else:
        causes["InternalServerError"] = BASE_ERROR_RATE
    p95 = dep.p95_ms if dep is not None and dep.p95_ms is not None else BASE_P95_MS
    if dep is not None and ((dep.error_rate or 0) > 0.01 or (dep.p95_ms or 0) > 1000):
        checks["deployment"] = "degraded"

    app = world.state.get(NAME)
    if isinstance(app, AppState) and app.extra_error_rate > 0:
        weights = app.error_types or {"UpstreamError": 1}
        total = sum(weights.values())
        for kind, weight in weights.items():
            causes[kind] = causes.get(kind, 0.0) + app.extra_error_rate * weight / total

    if _supabase("auth_is_degraded", world, False):
        causes["AuthApiError"] = AUTH_ERROR_RATE
        checks["auth"] = "degraded"
    slow = frozenset(slow_functions(world))
    if slow:
        causes["FunctionTimeout"] = SLOW_FUNCTION_ERROR_RATE * len(slow)
        p95 = max(p95, SLOW_FUNCTION_P95_MS)
        checks["edge_functions"] = "degraded"
    db = world.state.get("db") or {}
    db_degraded = bool(db.get("degraded"))
    if db_degraded:
        causes["StatementTimeout"] = DB_ERROR_RATE
        p95 = max(p95, float(db.get("p95_ms", 2500)))
        checks["database"] = "degraded"

    ok_share = math.prod(1.0 - min(1.0, r) for r in causes.values())
    error_rate = 1.0 - ok_share
    if error_rate >= 0.5:
        status = "down"
    elif error_rate > 0.01 or p95 > 1000 or any(v != "ok" for v in checks.values()):
        status = "degraded"
    else:
        status = "ok"
    return Effective(
        error_rate=error_rate,
        p95_ms=p95,
        status=status,
        checks=checks,
        causes=causes,
        slow_functions=slow,
        db_degraded=db_degraded,
        deployment=dep.uid if dep is not None else None,
    )


def error_mix(world: World) -> dict[str, int]:
    """The current errors by type, in whole percent of all errors (what error logs would show)."""
    causes = effective(world).causes
    total = sum(causes.values())
    if total <= 0:
        return {}
    return {kind: round(100 * share / total) for kind, share in causes.items()}


def _latency_cdf(le_s: float, p95_ms: float) -> float:
    mu = math.log(p95_ms / 1000.0) - _Z95 * _SIGMA
    return 0.5 * (1.0 + math.erf((math.log(le_s) - mu) / (_SIGMA * math.sqrt(2.0))))


def advance(world: World) -> None:
    """Count the traffic since the last advance at the current effective state."""
    app = world.state.get(NAME)
    if not isinstance(app, AppState):
        return
    now = world.clock.now()
    dt = (now - app.last_advance).total_seconds()
    app.last_advance = now
    if dt <= 0:
        return
    eff = effective(world)
    n = dt * RPS
    app.requests += n
    total_cause = sum(eff.causes.values()) or 1.0
    for kind, share in eff.causes.items():
        app.errors[kind] = app.errors.get(kind, 0.0) + n * eff.error_rate * share / total_cause
    for i, le in enumerate(BUCKETS):
        app.buckets[i] += n * _latency_cdf(le, eff.p95_ms)
    mu = math.log(eff.p95_ms / 1000.0) - _Z95 * _SIGMA
    app.duration_sum += n * math.exp(mu + _SIGMA**2 / 2)
    functions = edge_functions(world)
    per_function = dt * EDGE_RPS / len(functions)
    for fn in functions:
        timeout = 0.5 if fn in eff.slow_functions else 0.0
        error = BASE_ERROR_RATE + (0.3 if eff.checks["auth"] != "ok" else 0.0)
        for outcome, share in (
            ("timeout", timeout),
            ("error", (1 - timeout) * error),
            ("success", (1 - timeout) * (1 - error)),
        ):
            app.edge[(fn, outcome)] = app.edge.get((fn, outcome), 0.0) + per_function * share


def libpq_dsn(url: str) -> str:
    """A DSN psycopg accepts, from a libpq DSN or a (SQLAlchemy-style) URL."""
    for prefix in ("postgresql+psycopg://", "postgresql+psycopg2://", "postgres+psycopg://"):
        if url.startswith(prefix):
            return "postgresql://" + url[len(prefix) :]
    return url


def backend_alive(database_url: str, pid: int) -> bool | None:
    """True/False: whether backend ``pid`` still exists; None when PostgreSQL cannot be asked."""
    import psycopg

    try:
        with psycopg.connect(libpq_dsn(database_url), autocommit=True, connect_timeout=2) as conn:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,)
            ).fetchone()
    except psycopg.Error:
        return None
    return bool(row and row[0])


def _db_probe_due(world: World) -> tuple[str, int] | None:
    """(database_url, pid) when the slow backend should be looked for now (once a second at most)."""
    db = world.state.get("db") or {}
    app = world.state.get(NAME)
    if not db.get("degraded") or not db.get("backend_pid") or not world.database_url:
        return None
    if not isinstance(app, AppState) or time.monotonic() - app.db_checked_at < 1.0:
        return None
    app.db_checked_at = time.monotonic()
    return world.database_url, int(db["backend_pid"])


def _db_probed(world: World, alive: bool | None) -> None:
    db = world.state.get("db") or {}
    if alive is False and db.get("degraded"):
        advance(world)  # the time until now was degraded
        db["degraded"] = False
        db["restored_at"] = world.clock.now().isoformat()


def refresh_db(world: World) -> None:
    """End the database degradation once its slow backend is gone (checked at most once a second)."""
    due = _db_probe_due(world)
    if due is not None:
        _db_probed(world, backend_alive(*due))


def _exposition(world: World) -> str:
    app = app_state(world)
    eff = effective(world)
    total = round(app.requests)
    errors = {kind: round(v) for kind, v in sorted(app.errors.items())}
    n_err = sum(errors.values())
    lines = [
        "# HELP http_requests_total HTTP requests served, by status class.",
        "# TYPE http_requests_total counter",
        f'http_requests_total{{status="2xx"}} {max(0, total - n_err)}',
        f'http_requests_total{{status="5xx"}} {n_err}',
        "# HELP http_request_errors_total Failed requests, by error type.",
        "# TYPE http_request_errors_total counter",
    ]
    lines += [f'http_request_errors_total{{type="{k}"}} {v}' for k, v in errors.items()]
    lines += [
        "# HELP http_request_duration_seconds Request latency.",
        "# TYPE http_request_duration_seconds histogram",
    ]
    lines += [
        f'http_request_duration_seconds_bucket{{le="{le}"}} {round(c)}'
        for le, c in zip(BUCKETS, app.buckets, strict=True)
    ]
    lines += [
        f'http_request_duration_seconds_bucket{{le="+Inf"}} {total}',
        f"http_request_duration_seconds_sum {app.duration_sum:.6f}",
        f"http_request_duration_seconds_count {total}",
        "# HELP db_connections_in_use Database connections in use.",
        "# TYPE db_connections_in_use gauge",
        f"db_connections_in_use {54 if eff.db_degraded else 12}",
        "# HELP db_connections_max Database connection limit.",
        "# TYPE db_connections_max gauge",
        f"db_connections_max {DB_CONNECTIONS_MAX}",
        "# HELP edge_function_invocations_total Edge function invocations, by outcome.",
        "# TYPE edge_function_invocations_total counter",
    ]
    lines += [
        f'edge_function_invocations_total{{function="{fn}",outcome="{outcome}"}} {round(v)}'
        for (fn, outcome), v in sorted(app.edge.items())
    ]
    return "\n".join(lines) + "\n"


def init_state(world: World) -> None:
    """Fresh counters from the world clock's now; registers the ``app.settle`` hook."""
    world.state[NAME] = AppState(last_advance=world.clock.now())
    world.hooks["app.settle"] = lambda: advance(world)


def error_response(status: int, message: str, retry_after: float | None = None) -> Response:
    """The app's error answer: plain JSON ``{"error": message}``."""
    headers = {"retry-after": str(retry_after)} if retry_after is not None else {}
    return JSONResponse({"error": message}, status_code=status, headers=headers)


async def _refresh(world: World) -> None:
    due = _db_probe_due(world)
    if due is not None:
        # the probe opens a real connection: keep it off the event loop, but change state on it
        _db_probed(world, await asyncio.to_thread(backend_alive, *due))


def routes(world: World) -> list[BaseRoute]:
    """``GET /api/health`` and ``GET /metrics``; public, like a real health URL."""

    async def health(request: Request) -> Response:
        await _refresh(world)
        eff = effective(world)
        body = {
            "status": eff.status,
            "checks": eff.checks,
            "deployment": eff.deployment,
            "time": world.clock.now().isoformat(),
        }
        return JSONResponse(body, status_code=200 if eff.status == "ok" else 503)

    async def metrics(request: Request) -> Response:
        await _refresh(world)
        advance(world)
        return PlainTextResponse(
            _exposition(world), media_type="text/plain; version=0.0.4; charset=utf-8"
        )

    return [
        Route("/api/health", health, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]
