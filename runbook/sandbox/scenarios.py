"""Named scenarios: put the sandbox world into a known kind of trouble, and describe it.

``apply_scenario(world, "bad-deploy")`` stages the problem; the runbook's playbooks must then find
and fix it through the vendor APIs alone (rollback, redeploy, terminate the backend ...), and
``summarize(world)`` shows whether they did. POST /_sandbox/scenario and GET /_sandbox/state
expose both over HTTP.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable
from types import ModuleType
from typing import Any

from runbook.sandbox import product_app, vercel
from runbook.sandbox.core import World

SCENARIOS: dict[str, str] = {
    "healthy": "Nothing is wrong: baseline traffic (0.05 % errors, p95 about 180 ms).",
    "bad-deploy": "A new production deployment (dpl_bad...) fails 8 % of requests at p95 900 ms; "
    "rolling back to the previous deployment restores the baseline.",
    "high-error-rate": "A third-party dependency fails: 3 % errors (UpstreamTimeout, TypeError) "
    "without any new deployment (after_deploy=true: the errors came with a new deployment).",
    "auth-failure": "Supabase auth is rate limiting (kind=rate_limit) or down (kind=down): logins fail.",
    "edge-timeouts": "A slow version of an edge function (slug=transcribe) is deployed: its "
    "invocations time out until the previous source is redeployed.",
    "db-degradation": "The database is slow (p95 2.5 s); with a real PostgreSQL a backend running "
    "pg_sleep (application_name sandbox-slow-query) holds it until terminated.",
}
SLOW_QUERY_APP_NAME = "sandbox-slow-query"


class ScenarioUnavailable(ValueError):
    """A scenario needs something this sandbox does not have (a module, a database)."""


def _supabase(scenario: str, func: str) -> ModuleType:
    try:
        mod = importlib.import_module("runbook.sandbox.supabase")
    except ImportError as exc:
        raise ScenarioUnavailable(
            f"scenario {scenario!r} needs runbook.sandbox.supabase, which cannot be imported: {exc}"
        ) from exc
    if not callable(getattr(mod, func, None)):
        raise ScenarioUnavailable(
            f"scenario {scenario!r} needs runbook.sandbox.supabase.{func}(), which is missing"
        )
    return mod


def _settle(world: World) -> None:
    # count the traffic so far at the old state before changing it
    product_app.advance(world)


def _bad_deploy(world: World, error_rate: float = 0.08, p95_ms: float = 900.0) -> dict[str, Any]:
    previous = vercel.current_production(world)
    dep = vercel.add_deployment(
        world,
        uid_prefix="dpl_bad",
        message="Refactor checkout session handling",
        error_rate=error_rate,
        p95_ms=p95_ms,
    )
    vercel.set_production(world, vercel.PROJECT_ID, dep.uid, kind="deploy")
    return {"deployment": dep.uid, "url": dep.url, "previous": previous.uid if previous else None}


def _high_error_rate(
    world: World,
    error_rate: float = 0.03,
    error_types: dict[str, int] | None = None,
    after_deploy: bool = False,
) -> dict[str, Any]:
    """Errors of several types; ``after_deploy``: they come with a new production deployment (the
    runbook's "recent deployment bugs" cause, which a rollback fixes), else from a dependency."""
    _settle(world)
    app = product_app.app_state(world)
    app.error_types = dict(error_types or {"UpstreamTimeout": 70, "TypeError": 30})
    if after_deploy:
        dep = vercel.add_deployment(
            world,
            uid_prefix="dpl_err",
            message="Switch the checkout API client to the new SDK",
            error_rate=error_rate,
            p95_ms=200.0,
        )
        vercel.set_production(world, vercel.PROJECT_ID, dep.uid, kind="deploy")
        return {"deployment": dep.uid, "error_types": dict(app.error_types)}
    app.extra_error_rate = error_rate
    return {"extra_error_rate": error_rate, "error_types": dict(app.error_types)}


def _auth_failure(world: World, kind: str = "rate_limit") -> dict[str, Any]:
    supabase = _supabase("auth-failure", "degrade_auth")
    _settle(world)
    supabase.degrade_auth(world, kind)
    return {"auth": kind}


def _edge_timeouts(world: World, slug: str = "transcribe") -> dict[str, Any]:
    supabase = _supabase("edge-timeouts", "deploy_slow_version")
    _settle(world)
    version = supabase.deploy_slow_version(world, slug)
    return {"function": slug, "slow_version": version}


def _start_slow_query(database_url: str, seconds: int) -> int:
    """Start ``SELECT pg_sleep(seconds)`` in a daemon thread's own session; return its backend pid."""
    import psycopg
    from psycopg import sql

    ready = threading.Event()
    info: dict[str, Any] = {}

    def run() -> None:
        try:
            conn = psycopg.connect(
                product_app.libpq_dsn(database_url),
                autocommit=True,
                connect_timeout=5,
                application_name=SLOW_QUERY_APP_NAME,
                options="-c statement_timeout=0",
            )
        except psycopg.Error as exc:
            info["error"] = str(exc)
            ready.set()
            return
        with conn:
            info["pid"] = conn.info.backend_pid
            ready.set()
            try:
                conn.execute(sql.SQL("SELECT pg_sleep({})").format(sql.Literal(seconds)))
            except psycopg.Error:
                pass  # cancelled or terminated: that is the mitigation working

    threading.Thread(target=run, name=SLOW_QUERY_APP_NAME, daemon=True).start()
    if not ready.wait(15):
        raise ScenarioUnavailable("the slow query's PostgreSQL session did not start within 15 s")
    if "error" in info:
        raise ScenarioUnavailable(f"cannot start the slow query on PostgreSQL: {info['error']}")
    pid: int = info["pid"]
    return pid


def _db_degradation(world: World, p95_ms: float = 2500.0, seconds: int = 3600) -> dict[str, Any]:
    _settle(world)
    db: dict[str, Any] = {
        "degraded": True,
        "p95_ms": p95_ms,
        "since": world.clock.now().isoformat(),
    }
    if world.database_url:
        db["backend_pid"] = _start_slow_query(world.database_url, int(seconds))
        db["application_name"] = SLOW_QUERY_APP_NAME
    world.state["db"] = db
    return {"db": dict(db)}


_APPLY: dict[str, Callable[..., dict[str, Any]]] = {
    "bad-deploy": _bad_deploy,
    "high-error-rate": _high_error_rate,
    "auth-failure": _auth_failure,
    "edge-timeouts": _edge_timeouts,
    "db-degradation": _db_degradation,
}


def apply_scenario(world: World, name: str, **params: Any) -> dict[str, Any]:
    """Put the world into the named scenario.

    Args:
        world: the sandbox world.
        name: one of ``SCENARIOS``.
        **params: the scenario's knobs (e.g. ``error_rate`` for "bad-deploy", ``slug`` for
            "edge-timeouts", ``kind`` for "auth-failure").

    Returns:
        A JSON-able dict: the scenario, its description and what it changed.

    Raises:
        ValueError: an unknown name (the message lists the known ones), bad params, or (as
            ScenarioUnavailable) a scenario whose supporting module or database is missing.
    """
    if name not in SCENARIOS:
        raise ValueError(f"unknown scenario {name!r}; known scenarios: {', '.join(SCENARIOS)}")
    changes: dict[str, Any] = {}
    if name in _APPLY:
        try:
            changes = _APPLY[name](world, **params)
        except TypeError as exc:
            raise ValueError(f"bad parameters for scenario {name!r}: {exc}") from exc
    elif params:
        raise ValueError(f"scenario {name!r} takes no parameters")
    world.scenario = name
    return {"scenario": name, "description": SCENARIOS[name], "changes": changes}


def end_slow_query(world: World) -> bool:
    """Terminate the db-degradation scenario's backend, if one lives (cleanup for tests and drills)."""
    db = world.state.get("db") or {}
    if not world.database_url or not db.get("backend_pid"):
        return False
    import psycopg

    dsn = product_app.libpq_dsn(world.database_url)
    with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
        row = conn.execute("SELECT pg_terminate_backend(%s)", (db["backend_pid"],)).fetchone()
    return bool(row and row[0])


def _supabase_summary(world: World) -> dict[str, Any]:
    if "supabase" not in world.state:
        return {}
    try:
        mod = importlib.import_module("runbook.sandbox.supabase")
        st = world.state["supabase"]
        return {
            "auth_degraded": bool(mod.auth_is_degraded(world)),
            "slow_functions": sorted(mod.slow_functions(world)),
            "function_versions": {s: fn.current.version for s, fn in st.functions.items()},
        }
    except (ImportError, AttributeError, KeyError, TypeError, IndexError):
        return {}


def summarize(world: World) -> dict[str, Any]:
    """A JSON-able view of the world: production deployment, effective health, faults, functions."""
    summary: dict[str, Any] = {"scenario": world.scenario, "requests": len(world.requests)}
    dep = vercel.current_production(world)
    if dep is not None:
        summary["vercel"] = {
            "project": dep.project_id,
            "production": {
                "uid": dep.uid,
                "url": dep.url,
                "created": dep.created,
                "commit": dep.meta.get("githubCommitMessage"),
            },
        }
    if product_app.NAME in world.state:
        eff = product_app.effective(world)
        summary["app"] = {
            "status": eff.status,
            "error_rate": round(eff.error_rate, 6),
            "p95_ms": round(eff.p95_ms, 1),
            "availability": round(eff.availability, 6),
            "checks": dict(eff.checks),
            "error_mix": product_app.error_mix(world),
        }
    summary["db"] = dict(world.state.get("db") or {})
    summary["supabase"] = _supabase_summary(world)
    summary["faults"] = [f.to_dict() for f in world.faults]
    return summary
