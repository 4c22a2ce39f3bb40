"""Benchmark: diagnose and terminate N long-running backends, end to end.

Opens N sessions as a normal role in a throwaway database, each inside a transaction running
``pg_sleep`` (as an ORM would: a cancel leaves the transaction open, so the playbook has to
terminate them), then times ``diagnose`` + plan + ``cancel_and_terminate`` as a least-privilege bot
role (pg_signal_backend, pg_read_all_stats). Target: 200 backends in under 2 s. The database and
both roles are dropped afterwards, whatever happened.

Usage: ``python -m runbook.bench.mitigate_db [--backends 200] [--json] [--admin-dsn DSN]
[--private-cluster]`` (the last: a throwaway local cluster with enough ``max_connections``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from runbook.bench.machine import reading as machine_reading
from runbook.clients.postgres import PostgresClient
from runbook.playbooks.db import plan_mitigation

ADMIN_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
THRESHOLD_S = 0.5
HEADROOM = 5  # connections left for everyone else (and for our own diagnose session)


def _admin(dsn: str) -> psycopg.Connection[Any]:
    return psycopg.connect(dsn, autocommit=True, connect_timeout=5)


def _free_slots(dsn: str) -> int:
    with _admin(dsn) as conn:
        row = conn.execute(
            "SELECT current_setting('max_connections')::int"
            " - current_setting('superuser_reserved_connections')::int"
            " - (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')"
        ).fetchone()
    return int(row[0]) if row else 0


def _setup(dsn: str, tag: str) -> tuple[str, str, str]:
    db, app_role, bot = (
        f"runbook_bench_{tag}",
        f"runbook_bench_app_{tag}",
        f"runbook_bench_bot_{tag}",
    )
    with _admin(dsn) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(app_role)))
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN IN ROLE pg_signal_backend, pg_read_all_stats").format(
                sql.Identifier(bot)
            )
        )
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db)))
    return db, app_role, bot


def _cleanup(dsn: str, db: str, roles: list[str]) -> None:
    with _admin(dsn) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db)))
        for role in roles:
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


async def _open_sessions(conninfo: str, n: int) -> list[psycopg.AsyncConnection[Any]]:
    sessions: list[psycopg.AsyncConnection[Any]] = []
    for start in range(0, n, 50):  # in waves: 200 simultaneous forks starve a 2-core machine
        batch = await asyncio.gather(
            *(
                psycopg.AsyncConnection.connect(conninfo, application_name="bench-app")
                for _ in range(min(50, n - start))
            )
        )
        for conn in batch:
            # sent, not awaited: the session stays busy while we measure
            conn.pgconn.send_query(b"BEGIN; SELECT pg_sleep(600)")
        sessions.extend(batch)
    return sessions


async def _wait_busy(conninfo: str, role: str, n: int) -> None:
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
        for _ in range(400):
            cur = await conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE usename = %s AND state = 'active'"
                " AND query_start < now() - make_interval(secs => %s)",
                (role, THRESHOLD_S),
            )
            row = await cur.fetchone()
            if row and row[0] >= n:
                return
            await asyncio.sleep(0.05)
    raise RuntimeError(f"only {row[0] if row else 0} of {n} sessions became busy")


async def _bench(admin_dsn: str, n: int, db: str, app_role: str, bot: str) -> dict[str, Any]:
    app_dsn = make_conninfo(admin_dsn, user=app_role, dbname=db)
    bot_dsn = make_conninfo(admin_dsn, user=bot, dbname=db)
    sessions = await _open_sessions(app_dsn, n)
    try:
        await _wait_busy(make_conninfo(admin_dsn, dbname=db), app_role, n)
        client = PostgresClient(bot_dsn, statement_timeout_s=30)
        started = time.perf_counter()
        diagnosis = await client.diagnose(THRESHOLD_S)
        diagnosed = time.perf_counter()
        plan = plan_mitigation(diagnosis)
        results = await client.cancel_and_terminate(plan.pids, 5.0, started=plan.started)
        finished = time.perf_counter()
    finally:
        for conn in sessions:
            conn.pgconn.finish()  # the server side is gone already (or goes with the database)
    outcomes = [r.outcome for r in results]
    return {
        "backends": n,
        "found": len(diagnosis.backends),
        "chosen": len(plan.pids),
        "cancelled": outcomes.count("cancelled"),
        "terminated": outcomes.count("terminated"),
        "still_running": outcomes.count("still_running"),
        "diagnose_seconds": round(diagnosed - started, 3),
        "terminate_seconds": round(finished - diagnosed, 3),
        "seconds": round(finished - started, 3),
        "target_seconds": 2.0,
    }


def main(
    backends: int = 200,
    json_out: bool = False,
    admin_dsn: str = ADMIN_DSN,
    private_cluster: bool = False,
) -> int:
    """Run the benchmark once; print the figures.

    Args:
        backends: how many long-running sessions to open and terminate.
        json_out: print JSON (``backends``, ``terminated``, ``seconds`` ...) instead of a line.
        admin_dsn: a superuser DSN of the server (creates and drops the throwaway database/roles).
        private_cluster: run against a throwaway local cluster started with enough
            ``max_connections`` instead (a shared server rarely has 200 free slots).

    Returns:
        0 when every backend was terminated within 2 s, 1 otherwise (or when the server lacks the
        connection slots; the message says how many it has).
    """
    if private_cluster:
        from runbook.bench.pg_cluster import ClusterUnavailable
        from runbook.bench.pg_cluster import private_cluster as start_cluster

        try:
            with start_cluster(max_connections=backends + 50, fsync="off") as node:
                return main(backends, json_out, node.dsn, private_cluster=False)
        except ClusterUnavailable as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    free = _free_slots(admin_dsn) - HEADROOM
    if backends > free:
        print(
            f"error: the server has {free} free connection slots for {backends} backends; "
            f"raise max_connections (ALTER SYSTEM SET max_connections = {backends + 50}; restart), "
            f"pass fewer --backends, or use --private-cluster",
            file=sys.stderr,
        )
        return 1
    tag = uuid.uuid4().hex[:8]
    db, app_role, bot = (
        f"runbook_bench_{tag}",
        f"runbook_bench_app_{tag}",
        f"runbook_bench_bot_{tag}",
    )
    try:
        _setup(admin_dsn, tag)
        out = asyncio.run(_bench(admin_dsn, backends, db, app_role, bot))
    finally:
        _cleanup(admin_dsn, db, [app_role, bot])
    ok = out["terminated"] == backends and out["seconds"] < out["target_seconds"]
    out["ok"] = ok
    out["machine"] = machine_reading()  # to compare figures across machines
    if json_out:
        print(json.dumps(out))
    else:
        print(
            f"{out['terminated']}/{backends} backends terminated in {out['seconds']} s "
            f"(diagnose {out['diagnose_seconds']} s, signal {out['terminate_seconds']} s)"
        )
    return 0 if ok else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", type=int, default=200)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--admin-dsn", default=ADMIN_DSN)
    parser.add_argument("--private-cluster", action="store_true")
    args = parser.parse_args()
    sys.exit(main(args.backends, args.json, args.admin_dsn, args.private_cluster))
