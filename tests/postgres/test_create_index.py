"""A concrete missing-index hint and CREATE INDEX CONCURRENTLY on a real PostgreSQL."""

from __future__ import annotations

import asyncio

import psycopg
import pytest

from runbook.clients.postgres import PostgresClient
from runbook.playbooks.db import plan_mitigation
from tests.postgres.conftest import PgEnv

pytestmark = pytest.mark.postgres


def _orders(pg: PgEnv) -> None:
    """20,000 orders owned by the app role, read only by sequential scans."""
    with psycopg.connect(pg.dsn(pg.app), autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS public.orders")
        conn.execute(
            "CREATE TABLE public.orders (id bigserial PRIMARY KEY, customer_id int, note text)"
        )
        conn.execute(
            "INSERT INTO public.orders (customer_id, note) "
            "SELECT g % 1000, 'n' FROM generate_series(1, 20000) g"
        )
        for c in range(5):
            conn.execute("SELECT count(*) FROM public.orders WHERE customer_id = %s", (c,))
        conn.execute("SELECT pg_stat_force_next_flush()")


async def test_slow_query_filter_becomes_an_index_only_its_owner_can_create(
    pg: PgEnv, open_session
) -> None:
    """The long-running query's filter column on a seq-scanned table makes the hint concrete; the
    least-privilege bot is refused with the reason, the owner creates a valid index, and a second
    call finds it instead of building another."""
    await asyncio.to_thread(_orders, pg)
    slow = await open_session(
        pg.app,
        "SELECT pg_sleep(30), (SELECT count(*) FROM public.orders WHERE customer_id = 7)",
    )
    await asyncio.sleep(0.6)
    bot = PostgresClient(pg.dsn(pg.bot))
    diagnosis = await bot.diagnose(0.4, min_rows=10_000)
    plan = plan_mitigation(diagnosis, threshold_s=0.4)
    [hint] = [h for h in plan.index_hints if h.table == "public.orders"]
    assert hint.column == "customer_id"
    assert hint.statement == "CREATE INDEX CONCURRENTLY ON public.orders (customer_id);"
    # the playbook stops the slow query first (a concurrent build waits for older transactions)
    await bot.cancel_and_terminate([slow.pgconn.backend_pid], grace_s=1.0)

    refused = await bot.create_index("public.orders", "customer_id")
    assert refused.outcome == "skipped" and "does not own" in refused.detail
    owner = PostgresClient(pg.dsn(pg.app))
    built = await owner.create_index("public.orders", "customer_id", timeout_s=30)
    assert built.outcome == "created", built.detail
    with psycopg.connect(pg.dsn(pg.app)) as conn:
        row = conn.execute(
            "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "WHERE c.relname = %s",
            (built.index,),
        ).fetchone()
    assert row == (True,)
    again = await owner.create_index("public.orders", "customer_id")
    assert again.outcome == "exists"
    missing = await owner.create_index("public.orders", "no_such_column")
    assert missing.outcome == "not_found"
