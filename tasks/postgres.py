"""PostgreSQL checks of the triage phase (``psql $DATABASE_URL -c "SELECT NOW();"``)."""

from __future__ import annotations

import time
from typing import Any

import psycopg
from prefect import task

from blocks import PostgresTarget
from tasks._retry import VENDOR_TASK

LONG_RUNNING_SQL = """
SELECT count(*) FROM pg_stat_activity
WHERE state <> 'idle' AND backend_type = 'client backend' AND pid <> pg_backend_pid()
  AND query_start < now() - make_interval(secs => %s)
"""

CONNECTIONS_SQL = """
SELECT (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'),
       current_setting('max_connections')::int - current_setting('superuser_reserved_connections')::int
"""


@task(name="test-database-connection", **VENDOR_TASK)
async def test_database_connection(target: PostgresTarget) -> dict[str, Any]:
    """Connect, run ``SELECT now()``, count long-running queries and connections in use.

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
        "connections_pct": round(100 * used / max(limit, 1), 1),
    }
