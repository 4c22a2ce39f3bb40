"""PostgreSQL client of the database playbook: diagnose, cancel/terminate backends, vacuum, reload.

psycopg 3 async, one short autocommit connection per operation (VACUUM cannot run in a transaction
block, and an error must not poison the statements after it). Every session carries
``statement_timeout`` because a task timeout cannot interrupt a blocking query. Values always reach
the server as bound parameters; identifiers (VACUUM) come from the catalog and are quoted with
``psycopg.sql.Identifier``.

Errors: connection failures, timeouts, serialization failures and "too many connections" are
``PostgresTransientError``; anything else ``PostgresPermanentError`` with one sentence saying what to
fix (a missing privilege names the GRANT). The DSN's password never appears in a message.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from runbook.clients import postgres_sql as q
from runbook.clients.postgres_records import (
    Backend,
    BackendResult,
    DbDiagnosis,
    IndexResult,
    Privileges,
    SlowStatement,
    TableStat,
    VacuumResult,
)
from runbook.clients.postgres_sql import QUERY_TEXT_LIMIT
from runbook.errors import PostgresPermanentError, PostgresTransientError

APPLICATION_NAME = "runbook"
# sqlstates worth retrying: connection exceptions (08), timeouts/cancel (57014), shutdown (57P0x),
# serialization/deadlock (40001/40P01), too many connections (53300), lock not available (55P03)
_BUSY = ("too many", "remaining connection slots", "starting up", "shutting down", "recovery")
_TRANSIENT_STATES = {"57014", "57P01", "57P02", "57P03", "40001", "40P01", "53300", "55P03"}


class PostgresClient:
    """A PostgreSQL database as the playbook sees it.

    Args:
        conninfo: libpq connection string or postgresql:// URL (holds the password; never echoed).
        application_name: how our sessions show in pg_stat_activity (the playbook spares them).
        statement_timeout_s: per-statement limit of our own sessions.
        connect_timeout_s: seconds to wait for a connection.
    """

    def __init__(
        self,
        conninfo: str,
        *,
        application_name: str = APPLICATION_NAME,
        statement_timeout_s: float = 30.0,
        connect_timeout_s: float = 5.0,
    ) -> None:
        try:
            params = conninfo_to_dict(conninfo)
        except psycopg.Error:
            # libpq quotes the offending token, which may be the password
            raise PostgresPermanentError(
                "the DSN is not a valid libpq connection string or postgresql:// URL; fix it"
            ) from None
        self._conninfo = conninfo
        self._password = str(params.get("password") or "")
        self.user = str(params.get("user") or "")
        self.where = f"{params.get('host') or 'localhost'}:{params.get('port') or 5432}/{params.get('dbname') or self.user or 'postgres'}"
        timeout_ms = max(1, round(statement_timeout_s * 1000))
        self._options = f"{params.get('options') or ''} -c statement_timeout={timeout_ms}".strip()
        self._application_name = application_name
        self._connect_timeout = max(1, round(connect_timeout_s + 0.499))

    # --- plumbing ---------------------------------------------------------------------------

    def _scrub(self, text: str) -> str:
        return text.replace(self._password, "***") if self._password else text

    def _error(self, exc: psycopg.Error, doing: str, role: str = "") -> Exception:
        """The typed error for ``exc``; one sentence, no credentials."""
        state = exc.sqlstate or ""
        lines = str(exc).strip().splitlines()
        detail = self._scrub((exc.diag.message_primary if state else None) or (lines or [""])[0])
        who = role or self.user or "the runbook role"
        if state in ("28P01", "28000"):
            return PostgresPermanentError(
                f"PostgreSQL at {self.where} rejected role {who}: {detail}; fix the DSN's user and "
                "password (or pg_hba.conf)",
                vendor_message=detail,
            )
        if state == "3D000":
            return PostgresPermanentError(
                f"{detail} at {self.where}; fix the DSN's dbname", vendor_message=detail
            )
        if not state and "FATAL:" in detail:
            # a connect-time rejection carries no sqlstate in psycopg: read libpq's text
            detail = " ".join(detail.split("FATAL:", 1)[1].split())
            if not any(w in detail for w in _BUSY):
                return PostgresPermanentError(
                    f"PostgreSQL at {self.where} refused the connection: {detail}; fix the "
                    "DSN's user, password or dbname (or pg_hba.conf)",
                    vendor_message=detail,
                )
        elif not state and "failed: " in detail:
            detail = detail.rsplit("failed: ", 1)[1]
        if (
            state.startswith("08")
            or state in _TRANSIENT_STATES
            or (not state and isinstance(exc, psycopg.OperationalError))
        ):
            return PostgresTransientError(
                f"PostgreSQL at {self.where} failed while {doing}: {detail}", vendor_message=detail
            )
        return PostgresPermanentError(
            f"PostgreSQL at {self.where} refused {doing}: {detail}", vendor_message=detail
        )

    @asynccontextmanager
    async def _connect(self, doing: str) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        try:
            conn = await psycopg.AsyncConnection.connect(
                self._conninfo,
                autocommit=True,
                application_name=self._application_name,
                options=self._options,
                connect_timeout=self._connect_timeout,
            )
        except psycopg.Error as exc:
            raise self._error(exc, f"connecting ({doing})") from None
        try:
            yield conn
        except psycopg.Error as exc:
            raise self._error(exc, doing) from exc
        finally:
            await conn.close()

    @staticmethod
    async def _rows(
        conn: psycopg.AsyncConnection[Any], query: str, params: Any = None
    ) -> list[dict[str, Any]]:
        cur = conn.cursor(row_factory=psycopg.rows.dict_row)
        await cur.execute(query, params)  # type: ignore[arg-type]
        return await cur.fetchall()

    async def _privileges(self, conn: psycopg.AsyncConnection[Any]) -> Privileges:
        return Privileges(**(await self._rows(conn, q.PRIVILEGES))[0])

    # --- operations -------------------------------------------------------------------------

    async def privileges(self) -> Privileges:
        """The session role's relevant privileges.

        Raises:
            PostgresTransientError, PostgresPermanentError: as for every call.
        """
        async with self._connect("reading privileges") as conn:
            return await self._privileges(conn)

    async def diagnose(self, threshold_s: float, *, min_rows: int = 10_000) -> DbDiagnosis:
        """Read the database's state: backends past ``threshold_s`` or blocking, connections,
        slow statements, bloat, missing-index hints, the largest tables.

        Args:
            threshold_s: a query (or an idle transaction) older than this counts as long-running.
            min_rows: a table needs this many live rows for a missing-index hint.

        Returns:
            DbDiagnosis.

        Raises:
            PostgresPermanentError: the role cannot read other sessions (no pg_read_all_stats).
            PostgresTransientError: unreachable, timed out.
        """
        async with self._connect("diagnosing") as conn:
            privs = await self._privileges(conn)
            if not (privs.superuser or privs.read_all_stats):
                raise PostgresPermanentError(
                    f"role {privs.role} cannot see other sessions' queries: "
                    f"GRANT pg_read_all_stats TO {privs.role}"
                )
            head = (await self._rows(conn, q.HEAD))[0]
            backends = await self._rows(conn, q.BACKENDS, {"threshold": threshold_s})
            tables = await self._rows(conn, q.TABLES, {"min_rows": min_rows})
            diagnosis = DbDiagnosis(
                server_version=head["server_version"],
                database=head["database"],
                own_pid=head["own_pid"],
                threshold_s=threshold_s,
                privileges=privs,
                backends=[Backend(**b) for b in backends],
                connections_used=head["used"],
                connections_limit=head["connection_limit"],
                tables=[TableStat(**t) for t in tables],
            )
            for t in diagnosis.tables:  # the columns of index-hint candidates
                if t.n_live_tup >= min_rows and t.seq_scan > (t.idx_scan or 0):
                    cols = await self._rows(
                        conn, q.COLUMNS, {"schema": t.schema_name, "name": t.name}
                    )
                    t.columns = {c["column_name"]: bool(c["indexed"]) for c in cols}
            if head["has_pg_stat_statements"]:
                await self._slow_statements(conn, diagnosis)
            else:
                diagnosis.notes.append("pg_stat_statements is not installed: no slow statements")
            if head["has_pgstattuple"]:
                await self._exact_bloat(conn, diagnosis)
            return diagnosis

    async def _slow_statements(self, conn: psycopg.AsyncConnection[Any], d: DbDiagnosis) -> None:
        try:
            rows = await self._rows(conn, q.SLOW_STATEMENTS)
        except psycopg.Error as exc:  # installed but not preloaded, or no privilege
            d.notes.append(f"pg_stat_statements unreadable: {exc.diag.message_primary}")
            return
        d.slow_statements = [SlowStatement(**r) for r in rows]

    async def _exact_bloat(self, conn: psycopg.AsyncConnection[Any], d: DbDiagnosis) -> None:
        if not (d.privileges.superuser or d.privileges.stat_scan_tables):
            d.notes.append(
                f"pgstattuple needs GRANT pg_stat_scan_tables TO {d.privileges.role}; "
                "bloat is the dead-tuple estimate"
            )
            return
        # pgstattuple reads the whole table: only the few with the most dead tuples
        for table in sorted(d.tables, key=lambda t: t.n_dead_tup, reverse=True)[:5]:
            if table.n_dead_tup <= 0:
                break
            try:
                rows = await self._rows(conn, q.PGSTATTUPLE, (table.schema_name, table.name))
            except psycopg.Error as exc:
                d.notes.append(f"pgstattuple({table.qualified}): {exc.diag.message_primary}")
                continue
            table.exact_dead_pct = float(rows[0]["dead_tuple_percent"])
            d.pgstattuple = True

    async def cancel_and_terminate(
        self,
        pids: Sequence[int],
        grace_s: float = 5.0,
        *,
        started: Mapping[int, datetime | None] | None = None,
        poll_s: float = 0.05,
    ) -> list[BackendResult]:
        """Cancel the backends' queries, then terminate those still running or still holding a
        transaction open after ``grace_s``. One statement per step for all pids.

        Args:
            pids: backends to stop (already chosen by the playbook).
            grace_s: how long a cancel (then a terminate) gets to take effect.
            started: pid -> backend_start as diagnosed; a pid reused by a new process is left alone.
            poll_s: how often to look whether they stopped.

        Returns:
            One BackendResult per pid, in the order given.

        Raises:
            PostgresPermanentError: the role lacks pg_signal_backend (the message names the GRANT).
            PostgresTransientError: unreachable, timed out.
        """
        pids = list(dict.fromkeys(int(p) for p in pids))
        if not pids:
            return []
        starts = [(started or {}).get(p) for p in pids]
        results = {p: BackendResult(pid=p, action="none", outcome="skipped") for p in pids}
        async with self._connect("signalling backends") as conn:
            rows = await self._signal(conn, q.CANCEL, pids, starts)
            waiting: dict[int, Any] = {}
            for r in rows:
                res = results[r["pid"]]
                if not r["present"]:
                    res.outcome = "gone"
                elif not r["eligible"]:
                    res.outcome = "skipped"
                elif not r["signalled"]:
                    res.outcome = "gone"  # exited between the join and the signal
                else:
                    res.action, res.outcome = "cancel", "cancelled"
                    waiting[r["pid"]] = r
            # an idle transaction ignores a cancel: no point waiting for it
            active = {p for p, r in waiting.items() if r["state"] == "active"}
            left = await self._still_running(conn, waiting, active, grace_s, poll_s)
            if left:
                await self._signal(
                    conn, q.TERMINATE, left, [waiting[p]["backend_start"] for p in left]
                )
                for p in left:
                    results[p].action = "terminate"
                    results[p].outcome = "still_running"
                gone = await self._wait_gone(conn, left, grace_s, poll_s)
                for p in gone:
                    results[p].outcome = "terminated"
        return [results[p] for p in pids]

    async def _signal(
        self,
        conn: psycopg.AsyncConnection[Any],
        query: str,
        pids: list[int],
        starts: list[datetime | None],
    ) -> list[dict[str, Any]]:
        try:
            return await self._rows(conn, query, {"pids": pids, "starts": starts})
        except psycopg.errors.InsufficientPrivilege:
            role = (await self._rows(conn, "SELECT current_user AS r"))[0]["r"]
            raise PostgresPermanentError(
                f"role {role} cannot signal other backends: GRANT pg_signal_backend TO {role}"
            ) from None

    async def _still_running(
        self,
        conn: psycopg.AsyncConnection[Any],
        seen: dict[int, Any],
        active: set[int],
        grace_s: float,
        poll_s: float,
    ) -> list[int]:
        deadline = time.monotonic() + grace_s
        while True:
            now = {r["pid"]: r for r in await self._rows(conn, q.STATES, {"pids": list(seen)})}
            left, running = [], False
            for pid, before in seen.items():
                r = now.get(pid)
                if r is None or r["backend_start"] != before["backend_start"]:
                    continue
                same_query = r["state"] == "active" and r["query_start"] == before["query_start"]
                running = running or (same_query and pid in active)
                if same_query or (r["state"] or "").startswith("idle in transaction"):
                    left.append(pid)
            # done once every cancelled query has stopped (an open transaction will not end itself)
            if not running or time.monotonic() >= deadline:
                return left
            await asyncio.sleep(poll_s)

    async def _wait_gone(
        self, conn: psycopg.AsyncConnection[Any], pids: list[int], grace_s: float, poll_s: float
    ) -> set[int]:
        deadline = time.monotonic() + grace_s
        while True:
            rows = await self._rows(conn, q.STATES, {"pids": pids})
            present = {r["pid"] for r in rows}
            if not present or time.monotonic() >= deadline:
                return set(pids) - present
            await asyncio.sleep(poll_s)

    async def vacuum_analyze(self, tables: Sequence[str]) -> list[VacuumResult]:
        """``VACUUM (ANALYZE)`` each table on an autocommit connection.

        Args:
            tables: qualified names ("public.orders"); resolved by the server, never spliced in.

        Returns:
            One VacuumResult per table; a table the role may not vacuum is ``skipped`` with the
            grant it needs (PostgreSQL 17+: MAINTAIN; before: table or database owner).

        Raises:
            PostgresTransientError, PostgresPermanentError: connection or server failures.
        """
        results = []
        async with self._connect("vacuuming") as conn:
            for name in tables:
                resolve = (
                    q.RESOLVE_TABLE_17 if conn.info.server_version >= 170000 else q.RESOLVE_TABLE_16
                )
                try:
                    found = await self._rows(conn, resolve, {"name": name})
                except (
                    psycopg.errors.SyntaxError,
                    psycopg.errors.InvalidName,
                    psycopg.errors.FeatureNotSupported,
                ):
                    found = []  # not a table name at all ("a.b.c.d", "x; drop ...")
                if not found:
                    results.append(VacuumResult(table=name, outcome="not_found"))
                    continue
                t = found[0]
                if not t["may_vacuum"]:
                    results.append(
                        VacuumResult(
                            table=name, outcome="skipped", detail=_vacuum_grant(t, conn.info)
                        )
                    )
                    continue
                started = time.perf_counter()
                await conn.execute(
                    sql.SQL("VACUUM (ANALYZE) {}").format(
                        sql.Identifier(t["nspname"], t["relname"])
                    )
                )
                results.append(
                    VacuumResult(
                        table=name,
                        outcome="vacuumed",
                        seconds=round(time.perf_counter() - started, 3),
                    )
                )
        return results

    async def create_index(self, table: str, column: str, timeout_s: float = 300.0) -> IndexResult:
        """``CREATE INDEX CONCURRENTLY IF NOT EXISTS runbook_<table>_<column>_idx`` (no write lock).

        The table is resolved by the server and the column checked against the catalog; both reach
        the statement only as quoted identifiers. An index the build leaves invalid (a timeout, a
        deadlock) is dropped again, so a failure leaves nothing behind.

        Args:
            table: qualified name ("public.orders").
            column: the column to index.
            timeout_s: the longest the build may take (it waits for older transactions first).

        Returns:
            IndexResult: created, exists, skipped (the role does not own the table), not_found or
            failed (with the server's reason).
        """
        async with self._connect("creating an index") as conn:
            try:
                found = await self._rows(conn, q.RESOLVE_TABLE_16, {"name": table})
            except (psycopg.errors.SyntaxError, psycopg.errors.InvalidName):
                found = []
            if not found:
                return IndexResult(table=table, column=column, outcome="not_found")
            t = found[0]
            cols = await self._rows(conn, q.COLUMNS, {"schema": t["nspname"], "name": t["relname"]})
            if column not in {c["column_name"] for c in cols}:
                return IndexResult(
                    table=table, column=column, outcome="not_found", detail="no such column"
                )
            name = f"runbook_{t['relname']}_{column}_idx"[:63]
            if not t["owns"]:  # CREATE INDEX needs the table owner's role
                return IndexResult(
                    table=table,
                    column=column,
                    index=name,
                    outcome="skipped",
                    detail=f"role {t['role']} does not own {table} (owner: {t['owner']}); "
                    "creating an index needs the owner's role",
                )
            exists = await self._rows(conn, q.INDEX_VALID, {"schema": t["nspname"], "name": name})
            if exists and exists[0]["valid"]:
                return IndexResult(table=table, column=column, index=name, outcome="exists")
            started = time.perf_counter()
            stmt = sql.SQL("CREATE INDEX CONCURRENTLY IF NOT EXISTS {} ON {} ({})").format(
                sql.Identifier(name),
                sql.Identifier(t["nspname"], t["relname"]),
                sql.Identifier(column),
            )
            try:
                if exists:  # an invalid leftover of an earlier attempt
                    await self._drop_index(conn, t["nspname"], name)
                await conn.execute(
                    sql.SQL("SET statement_timeout = {}").format(
                        sql.Literal(max(1, round(timeout_s * 1000)))
                    )
                )
                await conn.execute(stmt)
            except psycopg.Error as exc:
                with contextlib.suppress(psycopg.Error):
                    await self._drop_index(conn, t["nspname"], name)
                return IndexResult(
                    table=table,
                    column=column,
                    index=name,
                    outcome="failed",
                    seconds=round(time.perf_counter() - started, 3),
                    detail=self._scrub(exc.diag.message_primary or type(exc).__name__),
                )
            valid = await self._rows(conn, q.INDEX_VALID, {"schema": t["nspname"], "name": name})
            return IndexResult(
                table=table,
                column=column,
                index=name,
                outcome="created" if valid and valid[0]["valid"] else "failed",
                seconds=round(time.perf_counter() - started, 3),
            )

    async def _drop_index(self, conn: psycopg.AsyncConnection[Any], schema: str, name: str) -> None:
        await conn.execute(
            sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(sql.Identifier(schema, name))
        )

    async def reload_conf(self) -> bool:
        """``SELECT pg_reload_conf()``.

        Returns:
            True when the server accepted the signal.

        Raises:
            PostgresPermanentError: the role may not call it (the message names the GRANT).
        """
        async with self._connect("reloading the configuration") as conn:
            try:
                rows = await self._rows(conn, "SELECT pg_reload_conf() AS ok")
            except psycopg.errors.InsufficientPrivilege:
                role = (await self._rows(conn, "SELECT current_user AS r"))[0]["r"]
                raise PostgresPermanentError(
                    f"role {role} cannot reload the server configuration: "
                    f"GRANT EXECUTE ON FUNCTION pg_reload_conf() TO {role}"
                ) from None
            return bool(rows[0]["ok"])


def _vacuum_grant(t: Mapping[str, Any], info: Any) -> str:
    role, table = t["role"], f"{t['nspname']}.{t['relname']}"
    if info.server_version >= 170000:
        return f"role {role} cannot vacuum {table}: GRANT MAINTAIN ON TABLE {table} TO {role}"
    return (
        f"role {role} cannot vacuum {table}: before PostgreSQL 17 only the table's owner "
        f"({t['owner']}) or the database's owner may; ALTER DATABASE ... OWNER TO {role} "
        "or leave it to autovacuum"
    )


__all__ = [
    "APPLICATION_NAME",
    "PostgresClient",
    "QUERY_TEXT_LIMIT",
    "Privileges",
    "Backend",
    "SlowStatement",
    "TableStat",
    "DbDiagnosis",
    "IndexResult",
    "BackendResult",
    "VacuumResult",
]
