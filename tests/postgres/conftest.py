"""Real-PostgreSQL fixtures of the database playbook tests.

One throwaway database per module; roles with unique names: ``app`` (a normal application role),
``bot`` (least privilege: exactly the documented GRANTs) and ``superuser``. Sessions are opened
with ``open_session`` and always closed afterwards.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from tests.conftest import drop_pg_database, make_pg_database

# the README's GRANTs for the bot role (PostgreSQL 15/16: VACUUM also needs the database owner)
BOT_GRANTS = [
    "GRANT pg_signal_backend, pg_read_all_stats, pg_stat_scan_tables TO {bot}",
    "GRANT EXECUTE ON FUNCTION pg_reload_conf() TO {bot}",
]


@dataclass
class PgEnv:
    """The module's database, its roles and how to reach it as each."""

    admin_dsn: str
    db: str
    app: str
    bot: str
    superuser: str
    roles: list[str] = field(default_factory=list)

    def dsn(self, role: str) -> str:
        return make_conninfo(self.admin_dsn, user=role, dbname=self.db)

    def admin(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.dsn("postgres"), autocommit=True)

    def make_role(self, prefix: str, *grants: str, superuser: bool = False) -> str:
        """A LOGIN role with a unique name holding ``grants`` (SQL with ``{r}`` for the role)."""
        name = f"rb_{prefix}_{uuid.uuid4().hex[:6]}"
        # function and table privileges live in each database: grant in the module's own
        with psycopg.connect(self.dsn("postgres"), autocommit=True) as conn:
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN" + (" SUPERUSER" if superuser else "")).format(
                    sql.Identifier(name)
                )
            )
            for g in grants:
                conn.execute(g.format(r=sql.Identifier(name).as_string(conn)))
        self.roles.append(name)
        return name


@pytest.fixture(scope="module")
def pg(pg_admin_dsn: str) -> Iterator[PgEnv]:
    """A database of this module's own with app, bot and superuser roles; all dropped afterwards."""
    db = make_pg_database("runbook_pgplay")
    env = PgEnv(pg_admin_dsn, db, "", "", "")
    try:
        env.app = env.make_role("app", "GRANT CREATE ON DATABASE " + f'"{db}"' + " TO {r}")
        env.bot = env.make_role("bot", *(g.replace("{bot}", "{r}") for g in BOT_GRANTS))
        env.superuser = env.make_role("su", superuser=True)
        with env.admin() as conn:
            conn.execute(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(
                sql.Identifier(db), sql.Identifier(env.bot)))  # fmt: skip
            conn.execute(
                sql.SQL("GRANT ALL ON SCHEMA public TO {}").format(sql.Identifier(env.app))
            )
        yield env
    finally:
        drop_pg_database(db)
        with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
            for role in env.roles:  # their grants went with the database
                conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


Opener = Callable[..., Awaitable[psycopg.AsyncConnection[Any]]]


@pytest.fixture
async def open_session(pg: PgEnv) -> AsyncIterator[Opener]:
    """``await open_session(role, sql, application_name=...)``: a session busy with ``sql``
    (sent, not awaited) or idle when ``sql`` is empty; closed at the end of the test."""
    opened: list[psycopg.AsyncConnection[Any]] = []

    async def opener(
        role: str, query: str = "", *, application_name: str = "app", autocommit: bool = True
    ) -> psycopg.AsyncConnection[Any]:
        conn = await psycopg.AsyncConnection.connect(
            pg.dsn(role), application_name=application_name, autocommit=autocommit
        )
        opened.append(conn)
        if query:
            conn.pgconn.send_query(query.encode())
        return conn

    yield opener
    pids = [c.pgconn.backend_pid for c in opened]
    for conn in opened:
        conn.pgconn.finish()
    # a backend inside pg_sleep does not notice its client left: end it
    async with await psycopg.AsyncConnection.connect(pg.dsn("postgres"), autocommit=True) as c:
        await c.execute("SELECT pg_terminate_backend(p) FROM unnest(%s::int[]) AS p", (pids,))


async def wait_for(check: Callable[[], Awaitable[bool]], within_s: float = 5.0) -> bool:
    """Poll ``check`` every 50 ms until it is true or ``within_s`` seconds pass."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while loop.time() < deadline:
        if await check():
            return True
        await asyncio.sleep(0.05)
    return False


async def activity(pg: PgEnv, pids: list[int]) -> dict[int, str | None]:
    """pid -> state for those of ``pids`` still connected."""
    async with await psycopg.AsyncConnection.connect(pg.dsn("postgres"), autocommit=True) as c:
        cur = await c.execute(
            "SELECT pid, state FROM pg_stat_activity WHERE pid = ANY(%s)", (pids,)
        )
        return {pid: state for pid, state in await cur.fetchall()}
