"""PostgreSQL: the triage phase's connection test (``psql $DATABASE_URL -c "SELECT NOW();"``) and
the database-degradation playbook's tasks (diagnose, terminate backends, vacuum, reload).

Every side effect goes through ``ctx.act`` under an idempotency key, so it happens at most once.
"""

from __future__ import annotations

import time
from typing import Any

import psycopg
from prefect import task

from blocks import PostgresTarget
from runbook.clients.postgres import APPLICATION_NAME, DbDiagnosis, PostgresClient
from runbook.playbooks.db import DbPlan, plan_mitigation
from tasks._retry import VENDOR_TASK
from tasks.context import ActionContext

LONG_RUNNING_SQL = """
SELECT count(*) FROM pg_stat_activity
WHERE state <> 'idle' AND backend_type = 'client backend' AND pid <> pg_backend_pid()
  AND query_start < now() - make_interval(secs => %s)
"""

#: the runbook's first symptom of database degradation: "Slow query responses (>1s)"
SLOW_QUERY_S = 1.0

SLOW_SQL = """
SELECT count(*), coalesce(max(extract(epoch FROM now() - query_start)), 0)::float8
FROM pg_stat_activity
WHERE state = 'active' AND backend_type = 'client backend' AND pid <> pg_backend_pid()
  AND datname = current_database() AND query_start < now() - make_interval(secs => %s)
"""

CONNECTIONS_SQL = """
SELECT (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'),
       current_setting('max_connections')::int - current_setting('superuser_reserved_connections')::int
"""


@task(name="test-database-connection", **VENDOR_TASK)
async def test_database_connection(target: PostgresTarget) -> dict[str, Any]:
    """Connect, run ``SELECT now()``, count long-running queries (past the target's threshold,
    5 min by default), slow ones (active in this database for over ``SLOW_QUERY_S``, the runbook's
    symptom) with the slowest's age, and the connections in use.

    A failed connection is a finding (ok False, with the reason without the DSN), not an error: an
    unreachable database is exactly what triage wants to know.
    """
    started = time.perf_counter()
    try:
        async with await psycopg.AsyncConnection.connect(
            **target.connect_kwargs(), autocommit=True
        ) as conn:
            row = await (await conn.execute("SELECT now()")).fetchone()
            latency_ms = (time.perf_counter() - started) * 1000
            long_row = await (
                await conn.execute(LONG_RUNNING_SQL, (target.long_query_threshold_s,))
            ).fetchone()
            slow_row = await (await conn.execute(SLOW_SQL, (SLOW_QUERY_S,))).fetchone()
            conn_row = await (await conn.execute(CONNECTIONS_SQL)).fetchone()
    except psycopg.Error as exc:
        reason = type(exc).__name__ + (
            f": {exc.sqlstate}" if getattr(exc, "sqlstate", None) else ""
        )
        return {"ok": False, "target": target.describe(), "error": reason}
    used, limit = conn_row or (0, 1)
    return {
        "ok": True,
        "target": target.describe(),
        "now": row[0].isoformat() if row else None,
        "latency_ms": round(latency_ms, 1),
        "long_running": int(long_row[0]) if long_row else 0,
        "slow_queries": int(slow_row[0]) if slow_row else 0,
        "slowest_query_s": round(float(slow_row[1]), 1) if slow_row else 0.0,
        "connections_pct": round(100 * used / max(limit, 1), 1),
    }


# --- the database-degradation playbook ------------------------------------------------------------


def client_for(target: PostgresTarget) -> PostgresClient:
    """The playbook's client for ``target``, from plain values (the block has no client of its own)."""
    return PostgresClient(
        target.dsn.get_secret_value(),
        application_name=APPLICATION_NAME,
        statement_timeout_s=target.statement_timeout_s,
        connect_timeout_s=target.connect_timeout_s,
    )


def plan_for(target: PostgresTarget, diagnosis: DbDiagnosis) -> DbPlan:
    """The playbook's plan with the block's threshold and protected roles and applications."""
    return plan_mitigation(
        diagnosis,
        threshold_s=target.long_query_threshold_s,
        protected_roles=target.protected_roles,
        protected_application_names=target.protected_application_names,
    )


@task(name="diagnose-database", **VENDOR_TASK)
async def diagnose_database(target: PostgresTarget) -> DbDiagnosis:
    """Read long-running and idle-in-transaction backends, blockers, connections, slow statements,
    bloat, missing-index hints and the largest tables.

    Returns:
        DbDiagnosis (``plan_for(target, diagnosis)`` turns it into decisions).

    Raises:
        PostgresPermanentError: bad DSN or a missing privilege (the message names the GRANT).
        PostgresTransientError: unreachable or timed out (retried).
    """
    return await client_for(target).diagnose(target.long_query_threshold_s)


@task(name="terminate-backends", **VENDOR_TASK)
async def terminate_backends(
    ctx: ActionContext, target: PostgresTarget, plan: DbPlan, grace_s: float = 5.0
) -> dict[str, Any]:
    """Cancel, then terminate, the backends the plan chose; once per set of backends.

    Returns:
        {"status", "already_done", "results": [{pid, action, outcome}]}; status "skipped" in a dry
        run, "nothing_to_do" when the plan chose no backend.

    Raises:
        PostgresPermanentError: the role lacks pg_signal_backend (the message names the GRANT).
    """
    if not plan.pids:
        return {"status": "nothing_to_do", "already_done": False, "results": []}
    where = target.describe()
    client = client_for(target)
    decided = {b.pid: b for b in plan.backends if b.act}
    action_plan = {
        "target": where,
        "backends": [
            {
                "pid": p,
                "role": decided[p].role,
                "application": decided[p].application_name,
                "reason": decided[p].reason,
            }
            for p in plan.pids
        ],
    }

    async def apply() -> dict[str, Any]:
        results = await client.cancel_and_terminate(plan.pids, grace_s, started=plan.started)
        return {"results": [r.model_dump() for r in results]}

    outcome = await ctx.act(
        "terminate_backends",
        where,
        action_plan,
        apply,
        key=ctx.key("terminate_backends", where, plan.key()),
    )
    return {
        "status": outcome.status.value,
        "already_done": outcome.already_done,
        "results": outcome.result.get("results", []),
    }


@task(name="vacuum-tables", **VENDOR_TASK)
async def vacuum_tables(
    ctx: ActionContext, target: PostgresTarget, tables: list[str]
) -> dict[str, Any]:
    """VACUUM ANALYZE ``tables`` (autocommit), once per incident and table set.

    Returns:
        {"status", "already_done", "results": [{table, outcome, seconds, detail}]}.
    """
    if not tables:
        return {"status": "nothing_to_do", "already_done": False, "results": []}
    where = target.describe()
    client = client_for(target)

    async def apply() -> dict[str, Any]:
        return {"results": [r.model_dump() for r in await client.vacuum_analyze(tables)]}

    outcome = await ctx.act(
        "vacuum_tables",
        where,
        {"target": where, "tables": tables},
        apply,
        key=ctx.key("vacuum_tables", where, ",".join(sorted(tables))),
    )
    return {
        "status": outcome.status.value,
        "already_done": outcome.already_done,
        "results": outcome.result.get("results", []),
    }


@task(name="create-index", **VENDOR_TASK)
async def create_index(
    ctx: ActionContext, target: PostgresTarget, table: str, column: str
) -> dict[str, Any]:
    """``CREATE INDEX CONCURRENTLY`` on ``table`` (``column``), once per incident, table and column.

    Returns:
        {"status", "already_done", "result": {table, column, index, outcome, seconds, detail}}.
    """
    where = target.describe()
    client = client_for(target)

    async def apply() -> dict[str, Any]:
        return {"result": (await client.create_index(table, column)).model_dump()}

    outcome = await ctx.act(
        "create_index",
        f"{where} {table}({column})",
        {"target": where, "table": table, "column": column},
        apply,
        key=ctx.key("create_index", where, table, column),
    )
    return {
        "status": outcome.status.value,
        "already_done": outcome.already_done,
        "result": outcome.result.get("result", {}),
    }


@task(name="reload-config", **VENDOR_TASK)
async def reload_config(ctx: ActionContext, target: PostgresTarget) -> dict[str, Any]:
    """``pg_reload_conf()``, once per incident.

    Returns:
        {"status", "already_done", "reloaded"}.

    Raises:
        PostgresPermanentError: the role may not reload (the message names the GRANT).
    """
    where = target.describe()
    client = client_for(target)

    async def apply() -> dict[str, Any]:
        return {"reloaded": await client.reload_conf()}

    outcome = await ctx.act("reload_config", where, {"target": where}, apply)
    return {
        "status": outcome.status.value,
        "already_done": outcome.already_done,
        "reloaded": bool(outcome.result.get("reloaded")),
    }
