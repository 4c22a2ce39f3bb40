"""The database playbook against a real PostgreSQL, run as the least-privilege bot role."""

from __future__ import annotations

import asyncio

import psycopg
import pytest

from runbook.clients.postgres import PostgresClient
from runbook.playbooks.db import plan_mitigation
from tests.postgres.conftest import PgEnv, activity, wait_for

pytestmark = pytest.mark.postgres
THRESHOLD = 0.4
SLEEP = "SELECT pg_sleep(60)"


async def test_playbook_stops_exactly_the_right_backends(pg: PgEnv, open_session) -> None:
    """Past-threshold app sessions are cancelled or terminated; superuser, protected-role,
    protected-application, our own and too-young sessions are never touched."""
    protected_role = pg.make_role("protected")
    plain = [await open_session(pg.app, SLEEP) for _ in range(2)]
    in_tx = await open_session(pg.app, "BEGIN; " + SLEEP)
    idle_tx = await open_session(pg.app, "BEGIN; SELECT 1")
    su = await open_session(pg.superuser, SLEEP)
    prot_role = await open_session(protected_role, SLEEP)
    prot_app = await open_session(pg.app, SLEEP, application_name="pg_dump")
    ours = await open_session(pg.app, SLEEP, application_name="runbook")
    await asyncio.sleep(THRESHOLD + 0.2)
    young = await open_session(pg.app, SLEEP)
    await asyncio.sleep(0.05)
    pid = {
        c: c.pgconn.backend_pid
        for c in [*plain, in_tx, idle_tx, su, prot_role, prot_app, ours, young]
    }

    client = PostgresClient(pg.dsn(pg.bot))
    diagnosis = await client.diagnose(THRESHOLD)
    assert not diagnosis.privileges.superuser
    plan = plan_mitigation(
        diagnosis,
        protected_roles=[protected_role],
        protected_application_names=["pg_dump"],
    )
    chosen = {pid[c] for c in [*plain, in_tx, idle_tx]}
    assert set(plan.pids) == chosen
    reasons = {b.pid: b.reason for b in plan.backends}
    assert "superuser" in reasons[pid[su]]
    assert "protected role" in reasons[pid[prot_role]]
    assert "protected application 'pg_dump'" in reasons[pid[prot_app]]
    assert "runbook session" in reasons[pid[ours]]
    assert pid[young] not in reasons or "under" in reasons[pid[young]]

    results = {
        r.pid: r for r in await client.cancel_and_terminate(plan.pids, 2.0, started=plan.started)
    }
    assert {p: results[p].outcome for p in chosen} == {
        pid[plain[0]]: "cancelled",
        pid[plain[1]]: "cancelled",
        pid[in_tx]: "terminated",
        pid[idle_tx]: "terminated",
    }
    after = await activity(pg, list(pid.values()))
    assert after[pid[plain[0]]] == "idle" and after[pid[plain[1]]] == "idle"
    assert pid[in_tx] not in after and pid[idle_tx] not in after
    for spared in (su, prot_role, prot_app, ours, young):
        assert after[pid[spared]] == "active", spared


async def test_blocker_is_stopped_and_its_victim_spared_and_released(
    pg: PgEnv, open_session
) -> None:
    """An idle-in-transaction lock holder is terminated; the session waiting on it is not, and
    its statement then completes."""
    with pg.admin() as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS accounts (id int primary key, n int)")
        conn.execute("INSERT INTO accounts VALUES (1, 0) ON CONFLICT DO NOTHING")
        conn.execute(f'GRANT ALL ON accounts TO "{pg.app}"')
    holder = await open_session(pg.app, "BEGIN; UPDATE accounts SET n = n + 1 WHERE id = 1")
    await asyncio.sleep(0.1)
    victim = await open_session(pg.app, "UPDATE accounts SET n = n + 10 WHERE id = 1")
    await asyncio.sleep(THRESHOLD + 0.2)
    h, v = holder.pgconn.backend_pid, victim.pgconn.backend_pid

    client = PostgresClient(pg.dsn(pg.bot))
    diagnosis = await client.diagnose(THRESHOLD)
    found = {b.pid: b for b in diagnosis.backends}
    assert found[h].blocking == [v] and found[v].blocked_by == [h]
    plan = plan_mitigation(diagnosis)
    assert plan.pids == [h]
    assert f"blocks pids {v}" in next(b.reason for b in plan.backends if b.pid == h)
    assert f"waits on pid {h}" in next(b.reason for b in plan.backends if b.pid == v)

    results = await client.cancel_and_terminate(plan.pids, 2.0, started=plan.started)
    assert [(r.pid, r.outcome) for r in results] == [(h, "terminated")]

    async def released() -> bool:
        return (await activity(pg, [v])).get(v) == "idle"

    assert await wait_for(released)


async def dead_tuples(pg: PgEnv, table: str) -> int:
    async with await psycopg.AsyncConnection.connect(pg.dsn("postgres"), autocommit=True) as c:
        cur = await c.execute(
            "SELECT n_dead_tup FROM pg_stat_user_tables WHERE relname = %s", (table,)
        )
        row = await cur.fetchone()
        return int(row[0]) if row else 0


async def test_bloated_table_is_vacuumed_and_the_counters_show_it(pg: PgEnv) -> None:
    """A table bloated by deletes is chosen for VACUUM ANALYZE and afterwards has no dead tuples
    and a last_vacuum time, done by the least-privilege bot (database owner)."""
    with pg.admin() as conn:
        conn.execute("DROP TABLE IF EXISTS events")
        conn.execute("CREATE TABLE events (id int, body text)")
        conn.execute(f'ALTER TABLE events OWNER TO "{pg.app}"')
        conn.execute("ALTER TABLE events SET (autovacuum_enabled = false)")
        conn.execute("INSERT INTO events SELECT g, 'x' FROM generate_series(1, 20000) g")
        conn.execute("DELETE FROM events WHERE id % 4 <> 0")
        conn.execute("SELECT pg_stat_force_next_flush()")  # n_dead_tup lags otherwise
    assert await wait_for(lambda: _has_dead(pg))

    client = PostgresClient(pg.dsn(pg.bot))
    plan = plan_mitigation(await client.diagnose(THRESHOLD))
    assert plan.vacuum_tables == ["public.events"]
    decision = plan.tables[0]
    assert decision.n_dead_tup >= 15000 and decision.dead_ratio >= 0.7

    [result] = await client.vacuum_analyze(plan.vacuum_tables)
    assert result.outcome == "vacuumed", result.detail
    assert await dead_tuples(pg, "events") == 0
    with pg.admin() as conn:
        row = conn.execute(
            "SELECT last_vacuum IS NOT NULL, last_analyze IS NOT NULL FROM pg_stat_user_tables"
            " WHERE relname = 'events'"
        ).fetchone()
    assert row == (True, True)


async def _has_dead(pg: PgEnv) -> bool:
    return await dead_tuples(pg, "events") >= 15000


async def test_least_privilege_bot_holds_only_the_documented_grants(pg: PgEnv) -> None:
    """The bot is no superuser, holds exactly pg_signal_backend, pg_read_all_stats and
    pg_stat_scan_tables, and may reload the configuration through its EXECUTE grant."""
    client = PostgresClient(pg.dsn(pg.bot))
    privs = await client.privileges()
    assert not privs.superuser
    assert privs.read_all_stats and privs.signal_backend and privs.stat_scan_tables
    with pg.admin() as conn:
        rows = conn.execute(
            "SELECT g.rolname FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid"
            " JOIN pg_roles u ON u.oid = m.member WHERE u.rolname = %s ORDER BY 1",
            (pg.bot,),
        ).fetchall()
    assert [r[0] for r in rows] == ["pg_read_all_stats", "pg_signal_backend", "pg_stat_scan_tables"]
    assert await client.reload_conf() is True
