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
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from pydantic import BaseModel, ConfigDict, Field

from runbook.errors import PostgresPermanentError, PostgresTransientError

APPLICATION_NAME = "runbook"
QUERY_TEXT_LIMIT = 500
# sqlstates worth retrying: connection exceptions (08), timeouts/cancel (57014), shutdown (57P0x),
# serialization/deadlock (40001/40P01), too many connections (53300), lock not available (55P03)
_BUSY = ("too many", "remaining connection slots", "starting up", "shutting down", "recovery")
_TRANSIENT_STATES = {"57014", "57P01", "57P02", "57P03", "40001", "40P01", "53300", "55P03"}

# --- SQL: values only ever as bound parameters ---------------------------------------------------

PRIVILEGES = """
SELECT current_user AS role, r.rolsuper AS superuser,
       pg_has_role(current_user, 'pg_read_all_stats', 'USAGE') AS read_all_stats,
       pg_has_role(current_user, 'pg_signal_backend', 'USAGE') AS signal_backend,
       pg_has_role(current_user, 'pg_stat_scan_tables', 'USAGE') AS stat_scan_tables,
       has_function_privilege('pg_reload_conf()', 'EXECUTE') AS reload_conf
FROM pg_roles r WHERE r.rolname = current_user
"""

HEAD = """
SELECT current_setting('server_version_num')::int AS server_version,
       current_database() AS database, pg_backend_pid() AS own_pid,
       (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')::int AS used,
       current_setting('max_connections')::int
         - current_setting('superuser_reserved_connections')::int AS connection_limit,
       EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_stat_statements')
         AS has_pg_stat_statements,
       EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pgstattuple') AS has_pgstattuple
"""

# in the target's database only (the cluster's other databases are someone else's): long-running
# (active past the threshold), idle in transaction past it (measured from the last
# state change: a busy transaction between statements is not idle), and both sides of a lock wait
BACKENDS = f"""
WITH a AS (
  SELECT a.*, CASE WHEN a.state LIKE 'idle in transaction%%' THEN a.state_change
                   ELSE a.query_start END AS since
  FROM pg_stat_activity a
  WHERE a.pid <> pg_backend_pid() AND coalesce(a.datname, current_database()) = current_database()
), blocked AS (
  SELECT a.pid, pg_blocking_pids(a.pid) AS by FROM a WHERE a.wait_event_type = 'Lock'
), blockers AS (
  SELECT b, array_agg(blocked.pid ORDER BY blocked.pid) AS blocking
  FROM blocked, unnest(blocked.by) AS b GROUP BY b
)
SELECT a.pid, a.backend_start, a.usename AS role,
       coalesce(a.application_name, '') AS application_name, host(a.client_addr) AS client_addr,
       a.state, coalesce(a.backend_type, '') AS backend_type,
       coalesce(r.rolsuper, false) AS is_superuser,
       extract(epoch FROM now() - a.query_start)::float8 AS query_age_s,
       extract(epoch FROM now() - a.xact_start)::float8 AS xact_age_s,
       coalesce(extract(epoch FROM now() - a.since), 0)::float8 AS age_s,
       a.query_start, a.wait_event_type, left(coalesce(a.query, ''), {QUERY_TEXT_LIMIT}) AS query,
       coalesce(bd.by, '{{}}'::int[]) AS blocked_by, coalesce(bk.blocking, '{{}}'::int[]) AS blocking
FROM a LEFT JOIN pg_roles r ON r.oid = a.usesysid
       LEFT JOIN blocked bd ON bd.pid = a.pid LEFT JOIN blockers bk ON bk.b = a.pid
WHERE (a.state <> 'idle' AND a.since < now() - make_interval(secs => %(threshold)s))
   OR bk.b IS NOT NULL OR bd.pid IS NOT NULL
ORDER BY age_s DESC
"""

TABLES = """
WITH t AS (
  SELECT s.schemaname AS schema_name, s.relname AS name,
         pg_total_relation_size(s.relid) AS total_bytes, s.n_live_tup, s.n_dead_tup, s.seq_scan,
         s.seq_tup_read, s.idx_scan, s.last_vacuum, s.last_autovacuum
  FROM pg_stat_user_tables s
), ranked AS (
  SELECT t.*, rank() OVER (ORDER BY total_bytes DESC) AS size_rank,
         rank() OVER (ORDER BY n_dead_tup DESC) AS dead_rank
  FROM t
)
SELECT schema_name, name, total_bytes, n_live_tup, n_dead_tup, seq_scan, seq_tup_read, idx_scan,
       last_vacuum, last_autovacuum
FROM ranked
WHERE size_rank <= 10 OR (n_dead_tup > 0 AND dead_rank <= 20)
   OR (seq_scan > coalesce(idx_scan, 0) AND n_live_tup >= %(min_rows)s)
ORDER BY total_bytes DESC LIMIT 100
"""

SLOW_STATEMENTS = f"""
SELECT left(query, {QUERY_TEXT_LIMIT}) AS query, calls::bigint AS calls,
       total_exec_time::float8 AS total_ms, mean_exec_time::float8 AS mean_ms
FROM pg_stat_statements ORDER BY mean_exec_time DESC LIMIT 10
"""

PGSTATTUPLE = """
SELECT dead_tuple_percent::float8 AS dead_tuple_percent
FROM pgstattuple(format('%%I.%%I', %s::text, %s::text)::regclass)
"""

# one statement signals every pid; a pid is signalled only when it is still the process the
# playbook chose (same backend_start), a client backend, not a superuser's and not our own:
# signalling a superuser backend would fail the whole statement
_SIGNAL = """
WITH c AS (
  SELECT t.pid, a.pid IS NOT NULL AND (t.started IS NULL OR a.backend_start = t.started) AS present,
         coalesce(a.backend_type = 'client backend' AND NOT coalesce(r.rolsuper, false)
                  AND a.pid <> pg_backend_pid(), false) AS eligible,
         a.state, a.backend_start, a.query_start
  FROM unnest(%(pids)s::int[], %(starts)s::timestamptz[]) AS t(pid, started)
  LEFT JOIN pg_stat_activity a ON a.pid = t.pid
  LEFT JOIN pg_roles r ON r.oid = a.usesysid
)
SELECT pid, present, eligible, state, backend_start, query_start,
       CASE WHEN present AND eligible THEN {fn}(pid) ELSE false END AS signalled
FROM c
"""
CANCEL = _SIGNAL.format(fn="pg_cancel_backend")
TERMINATE = _SIGNAL.format(fn="pg_terminate_backend")

STATES = """
SELECT pid, state, backend_start, query_start FROM pg_stat_activity WHERE pid = ANY(%(pids)s::int[])
"""

_RESOLVE_TABLE = """
SELECT c.oid, n.nspname, c.relname, pg_get_userbyid(c.relowner) AS owner, current_user AS role,
       (pg_has_role(c.relowner, 'USAGE') OR pg_has_role(d.datdba, 'USAGE') {maintain}) AS may_vacuum
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     JOIN pg_database d ON d.datname = current_database()
WHERE c.oid = to_regclass(%(name)s) AND c.relkind IN ('r', 'm', 'p')
"""
RESOLVE_TABLE_16 = _RESOLVE_TABLE.format(maintain="")
RESOLVE_TABLE_17 = _RESOLVE_TABLE.format(maintain="OR has_table_privilege(c.oid, 'MAINTAIN')")


class Privileges(BaseModel):
    """What the session's role may do; the playbook checks before it acts."""

    model_config = ConfigDict(extra="ignore")

    role: str
    superuser: bool = False
    read_all_stats: bool = False
    signal_backend: bool = False
    stat_scan_tables: bool = False
    reload_conf: bool = False


class Backend(BaseModel):
    """One server process worth a look: long-running, idle in transaction, or blocking others."""

    model_config = ConfigDict(extra="ignore")

    pid: int
    backend_start: datetime | None = None
    role: str | None = None
    application_name: str = ""
    client_addr: str | None = None
    state: str | None = None
    backend_type: str = ""
    is_superuser: bool = False
    query_age_s: float | None = Field(None, description="Seconds since the current query began.")
    xact_age_s: float | None = Field(None, description="Seconds since the transaction began.")
    age_s: float = Field(0.0, description="Running (active) or idle in transaction, in seconds.")
    query_start: datetime | None = None
    wait_event_type: str | None = None
    query: str = Field("", description=f"The query text, at most {QUERY_TEXT_LIMIT} characters.")
    blocked_by: list[int] = Field(default_factory=list)
    blocking: list[int] = Field(default_factory=list)

    @property
    def idle_in_transaction(self) -> bool:
        return (self.state or "").startswith("idle in transaction")


class SlowStatement(BaseModel):
    """A statement from pg_stat_statements (present only when the extension is loaded)."""

    query: str
    calls: int
    total_ms: float
    mean_ms: float


class TableStat(BaseModel):
    """A table's size, dead tuples and scan counters (pg_stat_user_tables)."""

    schema_name: str
    name: str
    total_bytes: int = 0
    n_live_tup: int = 0
    n_dead_tup: int = 0
    seq_scan: int = 0
    seq_tup_read: int = 0
    idx_scan: int | None = None
    last_vacuum: datetime | None = None
    last_autovacuum: datetime | None = None
    exact_dead_pct: float | None = Field(None, description="pgstattuple's dead_tuple_percent.")

    @property
    def qualified(self) -> str:
        return f"{self.schema_name}.{self.name}"

    @property
    def dead_ratio(self) -> float:
        """Dead tuples over all tuples (the exact pgstattuple figure when there is one)."""
        if self.exact_dead_pct is not None:
            return self.exact_dead_pct / 100.0
        total = self.n_live_tup + self.n_dead_tup
        return self.n_dead_tup / total if total else 0.0


class DbDiagnosis(BaseModel):
    """Everything the database playbook decides from, read in one pass."""

    server_version: int
    database: str
    own_pid: int
    threshold_s: float
    privileges: Privileges
    backends: list[Backend] = Field(default_factory=list)
    connections_used: int = 0
    connections_limit: int = 0
    slow_statements: list[SlowStatement] | None = None
    tables: list[TableStat] = Field(default_factory=list)
    pgstattuple: bool = False
    notes: list[str] = Field(default_factory=list)

    @property
    def connections_pct(self) -> float:
        return round(100.0 * self.connections_used / max(self.connections_limit, 1), 1)


class BackendResult(BaseModel):
    """What ``cancel_and_terminate`` did to one backend.

    ``outcome``: cancelled (its query stopped, the session lives on), terminated, gone (it had
    exited or been replaced before we signalled it), skipped (superuser, not a client backend, or
    our own), still_running (signalled but alive when the grace period ended).
    """

    pid: int
    action: str = Field(description="none, cancel or terminate: the strongest signal sent.")
    outcome: str


class VacuumResult(BaseModel):
    """What ``vacuum_analyze`` did to one table."""

    table: str
    outcome: str = Field(description="vacuumed, skipped or not_found.")
    seconds: float = 0.0
    detail: str = ""


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
        return Privileges(**(await self._rows(conn, PRIVILEGES))[0])

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
            head = (await self._rows(conn, HEAD))[0]
            backends = await self._rows(conn, BACKENDS, {"threshold": threshold_s})
            tables = await self._rows(conn, TABLES, {"min_rows": min_rows})
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
            if head["has_pg_stat_statements"]:
                await self._slow_statements(conn, diagnosis)
            else:
                diagnosis.notes.append("pg_stat_statements is not installed: no slow statements")
            if head["has_pgstattuple"]:
                await self._exact_bloat(conn, diagnosis)
            return diagnosis

    async def _slow_statements(self, conn: psycopg.AsyncConnection[Any], d: DbDiagnosis) -> None:
        try:
            rows = await self._rows(conn, SLOW_STATEMENTS)
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
                rows = await self._rows(conn, PGSTATTUPLE, (table.schema_name, table.name))
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
            rows = await self._signal(conn, CANCEL, pids, starts)
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
                    conn, TERMINATE, left, [waiting[p]["backend_start"] for p in left]
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
            now = {r["pid"]: r for r in await self._rows(conn, STATES, {"pids": list(seen)})}
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
            rows = await self._rows(conn, STATES, {"pids": pids})
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
                    RESOLVE_TABLE_17 if conn.info.server_version >= 170000 else RESOLVE_TABLE_16
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
