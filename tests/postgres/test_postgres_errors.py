"""Bad input against the database playbook: missing privileges, bad DSNs, SQL in labels."""

from __future__ import annotations

import asyncio

import pytest

from runbook.clients.postgres import PostgresClient
from runbook.errors import PostgresPermanentError, PostgresTransientError
from runbook.playbooks.db import plan_mitigation
from tests.postgres.conftest import PgEnv, activity

pytestmark = pytest.mark.postgres
SLEEP = "SELECT pg_sleep(60)"


async def test_role_without_pg_signal_backend_gets_the_grant_sentence(
    pg: PgEnv, open_session
) -> None:
    """A role with pg_read_all_stats but not pg_signal_backend fails to stop another role's
    backend with one sentence naming the GRANT, and the backend keeps running."""
    weak = pg.make_role("nosignal", "GRANT pg_read_all_stats TO {r}")
    victim = await open_session(pg.app, SLEEP)
    await asyncio.sleep(0.3)
    client = PostgresClient(pg.dsn(weak))
    plan = plan_mitigation(await client.diagnose(0.1))
    assert victim.pgconn.backend_pid in plan.pids
    with pytest.raises(PostgresPermanentError) as info:
        await client.cancel_and_terminate(plan.pids, 0.5, started=plan.started)
    assert str(info.value) == (
        f"role {weak} cannot signal other backends: GRANT pg_signal_backend TO {weak}"
    )
    assert (await activity(pg, [victim.pgconn.backend_pid]))[victim.pgconn.backend_pid] == "active"


async def test_role_without_pg_read_all_stats_cannot_diagnose(pg: PgEnv) -> None:
    """Without pg_read_all_stats the diagnosis would be blind, so it fails naming the GRANT."""
    blind = pg.make_role("blind", "GRANT pg_signal_backend TO {r}")
    with pytest.raises(PostgresPermanentError) as info:
        await PostgresClient(pg.dsn(blind)).diagnose(1)
    assert str(info.value) == (
        f"role {blind} cannot see other sessions' queries: GRANT pg_read_all_stats TO {blind}"
    )


async def test_reload_without_execute_grant_names_it(pg: PgEnv) -> None:
    """pg_reload_conf() without its EXECUTE grant fails with the GRANT to run."""
    role = pg.make_role("noreload")
    with pytest.raises(
        PostgresPermanentError, match=r"GRANT EXECUTE ON FUNCTION pg_reload_conf\(\)"
    ):
        await PostgresClient(pg.dsn(role)).reload_conf()


async def test_vacuum_without_ownership_is_skipped_with_the_reason(pg: PgEnv) -> None:
    """A role that neither owns the table nor the database gets "skipped" with what it needs,
    not a silent no-op reported as done."""
    role = pg.make_role("novac", "GRANT pg_read_all_stats TO {r}")
    with pg.admin() as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS ledger_rows (id int)")
    [result] = await PostgresClient(pg.dsn(role)).vacuum_analyze(["public.ledger_rows"])
    assert result.outcome == "skipped"
    assert f"role {role} cannot vacuum public.ledger_rows" in result.detail


async def test_unreachable_server_is_transient_and_hides_the_password() -> None:
    """A refused connection is transient, and the DSN's password never appears in the message."""
    client = PostgresClient("host=127.0.0.1 port=1 user=bot password=s3cr3t-pw dbname=x")
    with pytest.raises(PostgresTransientError) as info:
        await client.diagnose(1)
    assert "s3cr3t-pw" not in str(info.value) and "127.0.0.1:1/x" in str(info.value)


async def test_unknown_role_is_permanent_with_what_to_fix(pg: PgEnv) -> None:
    """A role that does not exist is a permanent error saying to fix the DSN."""
    client = PostgresClient(pg.dsn("no_such_role_xyz") + " password=pw-secret")
    with pytest.raises(PostgresPermanentError) as info:
        await client.privileges()
    assert "fix the DSN" in str(info.value) and "pw-secret" not in str(info.value)


def test_malformed_dsn_is_permanent_without_echoing_it() -> None:
    """A DSN libpq cannot parse is rejected at once; the message does not repeat it."""
    with pytest.raises(PostgresPermanentError) as info:
        PostgresClient("host=db password='unterminated")
    assert "unterminated" not in str(info.value)


async def test_sql_in_labels_only_reaches_queries_as_parameters(pg: PgEnv, open_session) -> None:
    """SQL-looking application names and table names are data: the protected one is spared,
    the bogus table is "not_found", and nothing is dropped."""
    evil = "x'); DROP TABLE canary; --"
    with pg.admin() as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS canary (id int)")
        conn.execute('CREATE TABLE IF NOT EXISTS "we""ird; name" (id int)')
    session = await open_session(pg.app, SLEEP, application_name=evil)
    await asyncio.sleep(0.3)
    client = PostgresClient(pg.dsn(pg.bot))
    plan = plan_mitigation(
        await client.diagnose(0.1), protected_application_names=[evil, "a' OR '1'='1"]
    )
    pid = session.pgconn.backend_pid
    assert pid not in plan.pids
    results = await client.vacuum_analyze(
        ["canary; DROP TABLE canary", "public.canary') --", '"we""ird; name"']
    )
    assert [r.outcome for r in results] == ["not_found", "not_found", "vacuumed"]
    with pg.admin() as conn:
        assert conn.execute("SELECT to_regclass('public.canary') IS NOT NULL").fetchone() == (True,)
