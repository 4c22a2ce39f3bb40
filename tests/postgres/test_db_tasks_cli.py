"""The playbook's Prefect tasks (through the ledger, at most once) and the ``runbook db`` CLI."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from blocks.postgres import PostgresTarget
from runbook.cli_db import app, parse_duration
from runbook.ledger import open_ledger
from runbook.models import Alert
from tasks.context import ActionContext
from tasks.postgres import (
    diagnose_database,
    plan_for,
    reload_config,
    terminate_backends,
    vacuum_tables,
)
from tasks.postgres import (
    test_database_connection as connection_test,  # not a test: triage's task
)
from tests.postgres.conftest import PgEnv, activity

pytestmark = pytest.mark.postgres
SLEEP = "BEGIN; SELECT pg_sleep(60)"


def make_ctx(tmp_path: Path, *, dry_run: bool = False) -> ActionContext:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    outcome = open_ledger(url).record_alert(
        Alert(source="generic", delivery_id="d1", dedup_key="db-slow", summary="db slow")
    )
    assert outcome.incident_id is not None
    return ActionContext(incident_id=outcome.incident_id, ledger_url=url, dry_run=dry_run)


def target_for(pg: PgEnv) -> PostgresTarget:
    return PostgresTarget(dsn=pg.dsn(pg.bot), long_query_threshold_s=0.3)


async def test_tasks_terminate_once_and_record_it(pg: PgEnv, open_session, tmp_path: Path) -> None:
    """terminate_backends stops the planned backends once; a retry finds the ledger's record and
    signals nothing again; vacuum and reload go through the ledger too."""
    sessions = [await open_session(pg.app, SLEEP) for _ in range(3)]
    await asyncio.sleep(0.45)
    target, ctx = target_for(pg), make_ctx(tmp_path)
    plan = plan_for(target, await diagnose_database.fn(target))
    pids = sorted(s.pgconn.backend_pid for s in sessions)
    assert sorted(plan.pids) == pids

    first = await terminate_backends.fn(ctx, target, plan, grace_s=2.0)
    assert first["status"] == "applied" and not first["already_done"]
    assert sorted(r["pid"] for r in first["results"] if r["outcome"] == "terminated") == pids
    assert await activity(pg, pids) == {}
    again = await terminate_backends.fn(ctx, target, plan, grace_s=2.0)
    assert again["already_done"] and again["results"] == first["results"]

    vac = await vacuum_tables.fn(ctx, target, ["public.nothing_here"])
    assert vac["results"][0]["outcome"] == "not_found"
    assert (await reload_config.fn(ctx, target))["reloaded"] is True
    kinds = [a.kind for a in ctx.ledger.actions_for(ctx.incident_id)]
    assert kinds == ["terminate_backends", "vacuum_tables", "reload_config"]


async def test_dry_run_task_changes_nothing(pg: PgEnv, open_session, tmp_path: Path) -> None:
    """In a dry run the task records the plan as skipped and every backend keeps running."""
    session = await open_session(pg.app, SLEEP)
    await asyncio.sleep(0.45)
    target, ctx = target_for(pg), make_ctx(tmp_path, dry_run=True)
    plan = plan_for(target, await diagnose_database.fn(target))
    out = await terminate_backends.fn(ctx, target, plan)
    assert out["status"] == "skipped"
    pid = session.pgconn.backend_pid
    assert (await activity(pg, [pid]))[pid] == "active"


def test_cli_diagnose_json_lists_backends(pg: PgEnv, open_session) -> None:
    """`runbook db diagnose --json` lists the long-running backend with its role, application
    and age, and touches nothing."""

    async def start() -> int:
        conn = await open_session(pg.app, SLEEP, application_name="worker-7")
        await asyncio.sleep(0.45)
        return conn.pgconn.backend_pid

    pid = asyncio.run(start())  # the fixture's sessions outlive this loop: plain libpq sockets
    res = CliRunner().invoke(
        app, ["diagnose", "--dsn", pg.dsn(pg.bot), "--older-than", "0.3s", "--json"]
    )
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    [row] = [b for b in out["backends"] if b["pid"] == pid]
    assert (row["role"], row["application"], row["action"]) == (
        pg.app,
        "worker-7",
        "cancel_then_terminate",
    )
    assert row["result"] == "dry_run" and row["query_age_s"] >= 0.3


def test_cli_mitigate_dry_run_then_for_real(pg: PgEnv, open_session) -> None:
    """`mitigate --dry-run` changes nothing; `mitigate` terminates the backend and says so."""

    async def start() -> int:
        conn = await open_session(pg.app, SLEEP)
        await asyncio.sleep(0.45)
        return conn.pgconn.backend_pid

    pid = asyncio.run(start())
    base = ["mitigate", "--dsn", pg.dsn(pg.bot), "--older-than", "0.3", "--json"]
    dry = CliRunner().invoke(app, [*base, "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert [b["result"] for b in json.loads(dry.output)["backends"] if b["pid"] == pid] == [
        "dry_run"
    ]
    assert asyncio.run(activity(pg, [pid]))[pid] == "active"
    real = CliRunner().invoke(app, base)
    assert real.exit_code == 0, real.output
    [row] = [b for b in json.loads(real.output)["backends"] if b["pid"] == pid]
    assert (row["action"], row["result"]) == ("terminate", "terminated")


def test_cli_bad_dsn_and_missing_grant_exit_1_with_one_sentence(pg: PgEnv) -> None:
    """Unreachable, malformed and under-privileged DSNs end with exit 1 and one line."""
    blind = pg.make_role("cliblind")
    cases = {
        "host=127.0.0.1 port=1 user=x password=hide-me": "Connection refused",
        "not a dsn = =": "bad --dsn",
        pg.dsn(blind): f"GRANT pg_read_all_stats TO {blind}",
    }
    for dsn, expected in cases.items():
        res = CliRunner().invoke(app, ["diagnose", "--dsn", dsn])
        assert res.exit_code == 1
        assert expected in res.output and "hide-me" not in res.output
        assert len(res.output.strip().splitlines()) == 1


def test_parse_duration_forms() -> None:
    """--older-than takes seconds, s, m and h, and nothing else."""
    assert [parse_duration(x) for x in ("90", "30s", "5m", "1h", "0.5s")] == [
        90,
        30,
        300,
        3600,
        0.5,
    ]
    for bad in ("", "5x", "-1m", "0"):
        with pytest.raises(Exception, match="duration"):
            parse_duration(bad)


async def test_connection_test_counts_slow_queries_before_they_are_long_running(
    pg: PgEnv, open_session
) -> None:
    """Triage's connection test: queries active in the target's database for over a second are
    counted as slow (the runbook's symptom) with the slowest's age, while under the long-running
    threshold none is long-running; an idle session is neither."""
    busy = [await open_session(pg.app, "SELECT pg_sleep(60)") for _ in range(2)]
    await open_session(pg.app)  # idle
    await asyncio.sleep(1.3)
    target = PostgresTarget(dsn=pg.dsn(pg.bot), long_query_threshold_s=300)
    out = await connection_test.fn(target)
    assert out["ok"] is True
    assert (out["slow_queries"], out["long_running"]) == (len(busy), 0)
    assert 1.0 < out["slowest_query_s"] < 60
