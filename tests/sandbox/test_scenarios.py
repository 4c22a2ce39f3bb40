"""Named scenarios: each puts the world into its trouble, and the runbook's fix undoes it."""

from __future__ import annotations

import asyncio
import importlib
import json
import sys
import time
from datetime import UTC, datetime

import httpx
import pytest

from runbook.clients.app import AppClient
from runbook.clients.vercel import VercelClient
from runbook.clock import ManualClock
from runbook.metrics import readings_between
from runbook.sandbox import product_app, scenarios, vercel
from runbook.sandbox.app import create_app
from runbook.sandbox.core import DEFAULT_TOKEN, FaultRule, World
from runbook.sandbox.scenarios import (
    SCENARIOS,
    ScenarioUnavailable,
    apply_scenario,
    summarize,
)
from tests.conftest import sandbox_url

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


def _world(**kwargs) -> World:  # type: ignore[no-untyped-def]
    return World(token=DEFAULT_TOKEN, seed=1234, clock=ManualClock(T0), **kwargs)


@pytest.fixture
def world() -> World:
    """A seeded world on a manual clock."""
    return _world()


@pytest.fixture
def transport(sandbox_transport: httpx.ASGITransport) -> httpx.ASGITransport:
    """The shared in-process sandbox (conftest), serving this module's ``world``."""
    return sandbox_transport


def _app_client(world: World, transport: httpx.AsyncBaseTransport) -> AppClient:
    return AppClient(
        f"{sandbox_url('app')}/api/health",
        f"{sandbox_url('app')}/metrics",
        transport=transport,
        clock=world.clock,
    )


async def _window_error_rate(app: AppClient, world: World, seconds: float = 60) -> float:
    before = await app.scrape()
    world.clock.advance(seconds)  # type: ignore[attr-defined]
    after = await app.scrape()
    rate = readings_between(before, after).error_rate
    assert rate is not None
    return rate


def test_the_scenarios_are_named_and_described() -> None:
    """The six named scenarios exist, each with a one-line description."""
    assert set(SCENARIOS) == {
        "healthy",
        "bad-deploy",
        "high-error-rate",
        "auth-failure",
        "edge-timeouts",
        "db-degradation",
    }
    assert all(desc and "\n" not in desc for desc in SCENARIOS.values())


def test_unknown_scenario_lists_the_known_ones(world: World, transport) -> None:  # type: ignore[no-untyped-def]
    """An unknown name raises ValueError naming every known scenario, and changes nothing."""
    before = summarize(world)
    with pytest.raises(ValueError, match="unknown scenario 'meteor'") as info:
        apply_scenario(world, "meteor")
    assert all(name in str(info.value) for name in SCENARIOS)
    assert summarize(world) == before


def test_bad_parameters_are_a_value_error(world: World, transport) -> None:  # type: ignore[no-untyped-def]
    """Unknown parameters are refused with the scenario's name, healthy takes none at all."""
    with pytest.raises(ValueError, match="bad parameters for scenario 'bad-deploy'"):
        apply_scenario(world, "bad-deploy", colour="red")
    with pytest.raises(ValueError, match="takes no parameters"):
        apply_scenario(world, "healthy", x=1)


def test_healthy_is_a_no_op(world: World, transport) -> None:  # type: ignore[no-untyped-def]
    """ "healthy" changes nothing but the scenario name; the app is at baseline."""
    result = apply_scenario(world, "healthy")
    summary = summarize(world)
    assert result == {"scenario": "healthy", "description": SCENARIOS["healthy"], "changes": {}}
    assert summary["scenario"] == "healthy"
    assert summary["app"]["status"] == "ok"
    assert summary["app"]["error_rate"] == pytest.approx(0.0005)
    assert summary["app"]["p95_ms"] == 180.0


async def test_bad_deploy_and_rollback(world: World, transport: httpx.ASGITransport) -> None:
    """bad-deploy lifts errors above 1 %; rolling back to the previous deployment brings them under 0.1 %."""
    changes = apply_scenario(world, "bad-deploy")["changes"]
    assert changes["deployment"].startswith("dpl_bad")
    assert summarize(world)["vercel"]["production"]["uid"] == changes["deployment"]
    assert product_app.effective(world).error_rate > 0.01
    app = _app_client(world, transport)
    client = VercelClient(sandbox_url("vercel"), DEFAULT_TOKEN, transport=transport)
    async with app, client:
        bad_rate = await _window_error_rate(app, world)
        await client.rollback(vercel.PROJECT_ID, changes["previous"], "bad deploy")
        good_rate = await _window_error_rate(app, world)
    assert bad_rate > 0.01
    assert good_rate < 0.001
    assert product_app.effective(world).error_rate < 0.001
    assert summarize(world)["app"]["status"] == "ok"


def test_high_error_rate_records_error_types(world: World, transport) -> None:  # type: ignore[no-untyped-def]
    """high-error-rate sets 3 % errors without a deploy and records the error types for the logs."""
    production = vercel.current_production(world)
    apply_scenario(world, "high-error-rate")
    assert vercel.current_production(world) is production
    assert world.state["app"]["error_types"] == {"UpstreamTimeout": 70, "TypeError": 30}
    eff = product_app.effective(world)
    assert eff.error_rate == pytest.approx(0.03, abs=0.001)
    mix = product_app.error_mix(world)
    assert mix["UpstreamTimeout"] == 69 and mix["TypeError"] == 30  # baseline errors are the 1 %


@pytest.mark.parametrize(
    ("name", "needs"), [("auth-failure", "degrade_auth"), ("edge-timeouts", "deploy_slow_version")]
)
def test_supabase_scenarios_say_what_is_missing(
    world: World, transport, monkeypatch: pytest.MonkeyPatch, name: str, needs: str
) -> None:  # type: ignore[no-untyped-def]
    """Without runbook.sandbox.supabase the Supabase scenarios raise a clear ScenarioUnavailable."""
    monkeypatch.setitem(sys.modules, "runbook.sandbox.supabase", None)  # type: ignore[arg-type]
    with pytest.raises(ScenarioUnavailable, match="runbook.sandbox.supabase"):
        apply_scenario(world, name)
    assert world.scenario is None


def _supabase_or_skip():  # type: ignore[no-untyped-def]
    try:
        return importlib.import_module("runbook.sandbox.supabase")
    except ImportError as exc:
        pytest.skip(f"runbook.sandbox.supabase cannot be imported yet: {exc}")


def test_auth_failure_degrades_the_app(world: World, transport) -> None:  # type: ignore[no-untyped-def]
    """auth-failure degrades Supabase auth, and the app's health shows it."""
    supabase = _supabase_or_skip()
    if "supabase" not in world.state:
        supabase.init_state(world)
    apply_scenario(world, "auth-failure")
    assert supabase.auth_is_degraded(world)
    eff = product_app.effective(world)
    assert eff.checks["auth"] == "degraded" and eff.status == "degraded"
    assert summarize(world)["supabase"]["auth_degraded"] is True


def test_edge_timeouts_slow_a_function(world: World, transport) -> None:  # type: ignore[no-untyped-def]
    """edge-timeouts deploys a slow version of the function; the app reports its timeouts."""
    supabase = _supabase_or_skip()
    if "supabase" not in world.state:
        supabase.init_state(world)
    versions = summarize(world)["supabase"]["function_versions"]
    result = apply_scenario(world, "edge-timeouts", slug="send-email")
    assert result["changes"]["slow_version"] == versions["send-email"] + 1
    assert "send-email" in summarize(world)["supabase"]["slow_functions"]
    assert product_app.effective(world).checks["edge_functions"] == "degraded"


def test_summary_is_json_and_shows_faults(world: World, transport) -> None:  # type: ignore[no-untyped-def]
    """summarize() is JSON-able and reports production, effective health and active faults."""
    world.add_fault(FaultRule(vendor="vercel", kind="error", status=502))
    apply_scenario(world, "db-degradation")
    summary = json.loads(json.dumps(summarize(world)))
    assert summary["vercel"]["production"]["uid"] == vercel.current_production(world).uid  # type: ignore[union-attr]
    assert summary["db"]["degraded"] is True and summary["db"]["p95_ms"] == 2500
    assert summary["app"]["p95_ms"] == 2500 and summary["app"]["checks"]["database"] == "degraded"
    assert [f["status"] for f in summary["faults"]] == [502]


async def test_control_api_applies_scenarios(transport: httpx.ASGITransport, world: World) -> None:
    """POST /_sandbox/scenario applies a scenario; an unknown one is a 400 naming the known ones."""
    async with httpx.AsyncClient(transport=transport, base_url="http://sandbox") as http:
        ok = await http.post("/_sandbox/scenario", json={"name": "bad-deploy", "params": {}})
        bad = await http.post("/_sandbox/scenario", json={"name": "nope"})
        state = await http.get("/_sandbox/state")
    assert ok.status_code == 200 and ok.json()["changes"]["deployment"].startswith("dpl_bad")
    assert bad.status_code == 400 and "bad-deploy" in bad.json()["error"]
    assert state.json()["app"]["status"] == "degraded"


# --- db-degradation with a real PostgreSQL --------------------------------------------------------


def _slow_backends(dsn: str) -> list[tuple[int, str]]:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid, query FROM pg_stat_activity WHERE application_name = %s AND state = 'active'",
            (scenarios.SLOW_QUERY_APP_NAME,),
        ).fetchall()
    return [(int(pid), str(query)) for pid, query in rows]


@pytest.mark.postgres
@pytest.mark.timeout(30)
async def test_db_degradation_holds_a_real_backend_until_terminated(pg_admin_dsn: str) -> None:
    """A real pg_sleep backend keeps the app degraded; terminating it restores the app within ~2 s."""
    import psycopg

    world = _world(database_url=pg_admin_dsn)
    app = _app_client(world, httpx.ASGITransport(app=create_app(world)))
    try:
        pid = apply_scenario(world, "db-degradation")["changes"]["db"]["backend_pid"]
        deadline = time.monotonic() + 5
        while not any(p == pid for p, _ in _slow_backends(pg_admin_dsn)):
            assert time.monotonic() < deadline, "the slow query never showed in pg_stat_activity"
            await asyncio.sleep(0.05)
        [(_, query)] = [b for b in _slow_backends(pg_admin_dsn) if b[0] == pid]
        assert query == "SELECT pg_sleep(3600)"
        async with app:
            assert (await app.health()).status_code == 503
            world.clock.advance(5)  # type: ignore[attr-defined]
            assert (await app.health()).status_code == 503  # still alive: still degraded

            with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
                row = conn.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone()
            assert row is not None and row[0] is True
            terminated = time.monotonic()
            while not (check := await app.health()).ok:
                assert time.monotonic() - terminated < 2.5, "the app stayed degraded"
                await asyncio.sleep(0.1)
        assert check.status_code == 200
        assert world.state["db"]["degraded"] is False and "restored_at" in world.state["db"]
    finally:
        scenarios.end_slow_query(world)
