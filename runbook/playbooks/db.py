"""Database performance degradation: which backends to stop, which tables to vacuum, which indexes
to recommend. Pure functions over a ``DbDiagnosis``; no I/O.

Every decision carries its reason, for the JSON output of ``runbook db`` and the incident timeline.
The order of the rules is the order of the safety envelope: our own sessions, non-client processes,
superusers and protected roles or applications are spared before any age is looked at.
A missing index is recommended for the RCA; when the filtering column can be read from the queries
the database is running (a concrete ``CREATE INDEX CONCURRENTLY``), the flow may create it, but only
with approval (policy action ``create_index``).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from runbook.clients.postgres import (
    APPLICATION_NAME,
    Backend,
    BackendResult,
    DbDiagnosis,
    TableStat,
    VacuumResult,
)

MIN_DEAD_RATIO = 0.2
MIN_DEAD_TUPLES = 1000
MIN_ROWS_FOR_INDEX = 10_000


class BackendDecision(BaseModel):
    """One backend found and whether the playbook may stop it, with why."""

    pid: int
    backend_start: datetime | None = None
    role: str | None = None
    application_name: str = ""
    state: str | None = None
    backend_type: str = ""
    query_age_s: float | None = None
    age_s: float = 0.0
    query: str = ""
    act: bool = False
    reason: str


class TableDecision(BaseModel):
    """A table with dead tuples and whether to VACUUM ANALYZE it, with why."""

    table: str
    n_dead_tup: int
    dead_ratio: float
    exact: bool = False
    vacuum: bool = False
    reason: str


class IndexHint(BaseModel):
    """A missing-index recommendation for the RCA; with a ``column`` it can be created (approval)."""

    table: str
    reason: str
    statement: str
    column: str | None = Field(
        None, description="The filtering column, when read from the running or slow queries."
    )


class DbPlan(BaseModel):
    """What the database playbook would do, decision by decision."""

    threshold_s: float
    backends: list[BackendDecision] = Field(default_factory=list)
    tables: list[TableDecision] = Field(default_factory=list)
    index_hints: list[IndexHint] = Field(default_factory=list)

    @property
    def pids(self) -> list[int]:
        """The backends to cancel, then terminate if they hold on."""
        return [b.pid for b in self.backends if b.act]

    @property
    def started(self) -> dict[int, datetime | None]:
        """pid -> backend_start, so a pid reused by a new process is never signalled."""
        return {b.pid: b.backend_start for b in self.backends if b.act}

    @property
    def vacuum_tables(self) -> list[str]:
        return [t.table for t in self.tables if t.vacuum]

    def key(self) -> str:
        """A short stable digest of the chosen backends (an idempotency key part)."""
        ident = ",".join(f"{b.pid}@{b.backend_start}" for b in self.backends if b.act)
        return hashlib.sha256(ident.encode()).hexdigest()[:12]


def _age(seconds: float) -> str:
    return f"{seconds:.1f}s"


def decide_backend(
    b: Backend,
    *,
    own_pid: int,
    threshold_s: float,
    protected_roles: Iterable[str] = (),
    protected_application_names: Iterable[str] = (),
    own_application_name: str = APPLICATION_NAME,
) -> tuple[bool, str]:
    """Whether the playbook may stop backend ``b``, and why (before lock relations are weighed).

    Returns:
        (act, reason).
    """
    if b.pid == own_pid:
        return False, "our own backend"
    if b.application_name == own_application_name:
        return False, f"a runbook session (application_name {own_application_name!r})"
    if b.backend_type != "client backend":
        return False, (
            f"a {b.backend_type or 'server'} process, not a client backend "
            "(replication, autovacuum and background workers are never touched)"
        )
    if b.is_superuser:
        return False, f"a superuser's backend (role {b.role}); the runbook never signals those"
    if b.role in set(protected_roles):
        return False, f"protected role {b.role!r}"
    if b.application_name in set(protected_application_names):
        return False, f"protected application {b.application_name!r}"
    what = "idle in transaction" if b.idle_in_transaction else f"{b.state or 'running'}"
    if b.age_s < threshold_s:
        return False, f"{what} for {_age(b.age_s)}, under the {_age(threshold_s)} threshold"
    reason = f"{what} for {_age(b.age_s)}, past the {_age(threshold_s)} threshold"
    if b.blocking:
        reason += f"; blocks pids {', '.join(map(str, b.blocking))}"
    return True, reason


def choose_backends(
    diagnosis: DbDiagnosis,
    *,
    threshold_s: float | None = None,
    protected_roles: Iterable[str] = (),
    protected_application_names: Iterable[str] = (),
    own_application_name: str = APPLICATION_NAME,
) -> list[BackendDecision]:
    """A decision for every backend the diagnosis found.

    A backend that only waits on a lock held by a backend being stopped is spared: stopping the
    blocker releases it.

    Args:
        diagnosis: what ``PostgresClient.diagnose`` found.
        threshold_s: the age past which a query counts as long-running (default: the diagnosis').
        protected_roles: roles never touched (PostgresTarget.protected_roles).
        protected_application_names: application names never touched.
        own_application_name: the runbook's own sessions' application_name.

    Returns:
        BackendDecision per backend, longest-running first.
    """
    threshold = diagnosis.threshold_s if threshold_s is None else threshold_s
    roles, apps = list(protected_roles), list(protected_application_names)
    decided = {
        b.pid: decide_backend(
            b,
            own_pid=diagnosis.own_pid,
            threshold_s=threshold,
            protected_roles=roles,
            protected_application_names=apps,
            own_application_name=own_application_name,
        )
        for b in diagnosis.backends
    }
    out = []
    for b in sorted(diagnosis.backends, key=lambda x: x.age_s, reverse=True):
        act, reason = decided[b.pid]
        stopping = [p for p in b.blocked_by if decided.get(p, (False, ""))[0]]
        if act and stopping and not b.blocking:
            act = False
            reason = f"waits on pid {', '.join(map(str, stopping))}, which is being stopped"
        out.append(
            BackendDecision(
                pid=b.pid,
                backend_start=b.backend_start,
                role=b.role,
                application_name=b.application_name,
                state=b.state,
                backend_type=b.backend_type,
                query_age_s=b.query_age_s,
                age_s=b.age_s,
                query=b.query,
                act=act,
                reason=reason,
            )
        )
    return out


def choose_tables(
    tables: Sequence[TableStat],
    *,
    min_dead_ratio: float = MIN_DEAD_RATIO,
    min_dead_tuples: int = MIN_DEAD_TUPLES,
) -> list[TableDecision]:
    """Which tables to VACUUM ANALYZE: enough dead tuples, and a large enough share of the table.

    Returns:
        A TableDecision for every table with dead tuples, most dead first.
    """
    out = []
    for t in sorted(tables, key=lambda x: x.n_dead_tup, reverse=True):
        if t.n_dead_tup <= 0 and t.exact_dead_pct is None:
            continue
        ratio = t.dead_ratio
        how = "pgstattuple" if t.exact_dead_pct is not None else "estimate"
        vacuum = t.n_dead_tup >= min_dead_tuples and ratio >= min_dead_ratio
        verdict = "at or over" if vacuum else "under"
        reason = (
            f"{t.n_dead_tup} dead tuples, {ratio:.0%} of the table ({how}); {verdict} the "
            f"{min_dead_ratio:.0%} / {min_dead_tuples} dead-tuple threshold"
        )
        out.append(
            TableDecision(
                table=t.qualified,
                n_dead_tup=t.n_dead_tup,
                dead_ratio=round(ratio, 4),
                exact=t.exact_dead_pct is not None,
                vacuum=vacuum,
                reason=reason,
            )
        )
    return out


def quote_ident(name: str) -> str:
    """SQL identifier quoting for recommendation text (never executed here)."""
    if re.fullmatch(r"[a-z_][a-z0-9_$]*", name):
        return name
    return '"' + name.replace('"', '""') + '"'


_NOT_COLUMNS = {"and", "or", "not", "is", "null", "true", "false", "where", "select", "exists"}
_PREDICATE = re.compile(
    r'(?:\b[A-Za-z_]\w*\.)?"?([A-Za-z_][A-Za-z0-9_]*)"?\s*'
    r"(?:=|<>|!=|<=|>=|<|>|\bin\b|\bbetween\b|\blike\b|\bilike\b|\bis\b)",
    re.IGNORECASE,
)


def filter_columns(query: str, schema: str, table: str) -> list[str]:
    """Columns ``query`` filters ``schema.table`` on (its WHERE clause), in order; [] if it does not
    read that table. A heuristic over the text: the catalog check happens before anything runs."""
    text = " ".join(query.split())
    name = rf'(?:"?{re.escape(schema)}"?\.)?"?{re.escape(table)}"?'
    if not re.search(rf"\b(?:from|join)\s+{name}(?![\w.])", text, re.IGNORECASE):
        return []
    where = re.search(
        r"\bwhere\b(.*?)(?:\bgroup\s+by\b|\border\s+by\b|\blimit\b|\bfor\s+update\b|$)",
        text,
        re.IGNORECASE,
    )
    if where is None:
        return []
    out: list[str] = []
    for col in _PREDICATE.findall(where.group(1)):
        if col.lower() not in _NOT_COLUMNS and col not in out:
            out.append(col)
    return out


def index_hints(
    tables: Sequence[TableStat],
    *,
    queries: Sequence[str] = (),
    min_rows: int = MIN_ROWS_FOR_INDEX,
) -> list[IndexHint]:
    """Missing-index hints: large tables read mostly by sequential scans.

    Args:
        tables: the diagnosis's tables (``columns`` filled for the candidates).
        queries: texts of the long-running backends and slowest statements; a column they filter a
            candidate table on, that exists and leads no index, makes the hint concrete.
        min_rows: a table needs this many live rows.

    Returns:
        One IndexHint per table, the most rows read sequentially first.
    """
    out = []
    for t in sorted(tables, key=lambda x: x.seq_tup_read, reverse=True):
        idx = t.idx_scan or 0
        if t.n_live_tup < min_rows or t.seq_scan <= idx:
            continue
        table = f"{quote_ident(t.schema_name)}.{quote_ident(t.name)}"
        column = next(
            (
                c
                for q in queries
                for c in filter_columns(q, t.schema_name, t.name)
                if t.columns.get(c) is False  # exists, and leads no index yet
            ),
            None,
        )
        reason = (
            f"{t.seq_scan} sequential scans read {t.seq_tup_read} rows of {t.n_live_tup} "
            f"live rows, against {idx} index scans"
        )
        if column is not None:
            reason += f"; the slow queries filter on {column}"
            statement = f"CREATE INDEX CONCURRENTLY ON {table} ({quote_ident(column)});"
        else:
            statement = (
                f"-- find the filtering column in the slow statements, then, with approval:\n"
                f"CREATE INDEX CONCURRENTLY ON {table} (<column>);"
            )
        out.append(IndexHint(table=t.qualified, reason=reason, statement=statement, column=column))
    return out


def plan_mitigation(
    diagnosis: DbDiagnosis,
    *,
    threshold_s: float | None = None,
    protected_roles: Iterable[str] = (),
    protected_application_names: Iterable[str] = (),
    min_dead_ratio: float = MIN_DEAD_RATIO,
    min_dead_tuples: int = MIN_DEAD_TUPLES,
) -> DbPlan:
    """The whole playbook's plan: backends, tables, index recommendations.

    Returns:
        DbPlan; ``plan.pids`` and ``plan.vacuum_tables`` are what the apply step acts on.
    """
    return DbPlan(
        threshold_s=diagnosis.threshold_s if threshold_s is None else threshold_s,
        backends=choose_backends(
            diagnosis,
            threshold_s=threshold_s,
            protected_roles=protected_roles,
            protected_application_names=protected_application_names,
        ),
        tables=choose_tables(
            diagnosis.tables, min_dead_ratio=min_dead_ratio, min_dead_tuples=min_dead_tuples
        ),
        index_hints=index_hints(
            diagnosis.tables,
            queries=[b.query for b in diagnosis.backends if b.query]
            + [st.query for st in diagnosis.slow_statements or []],
        ),
    )


def report(
    diagnosis: DbDiagnosis,
    plan: DbPlan,
    results: Sequence[BackendResult] = (),
    vacuumed: Sequence[VacuumResult] = (),
    *,
    dry_run: bool = False,
) -> dict[str, Any]:
    """A JSON-able account: each backend found and what was done to it, tables, hints, notes.

    Returns:
        {"database", "connections", "backends": [{pid, role, application, query_age_s, action,
        result, reason}], "tables", "index_hints", "slow_statements", "largest_tables", "notes"}.
    """
    done = {r.pid: r for r in results}
    backends = []
    for b in plan.backends:
        r = done.get(b.pid)
        if not b.act:
            action, result = "none", "spared"
        elif dry_run:
            action, result = "cancel_then_terminate", "dry_run"
        elif r is None:
            action, result = "cancel_then_terminate", "not_applied"
        else:
            action, result = r.action, r.outcome
        backends.append(
            {
                "pid": b.pid,
                "role": b.role,
                "application": b.application_name,
                "state": b.state,
                "query_age_s": None if b.query_age_s is None else round(b.query_age_s, 1),
                "action": action,
                "result": result,
                "reason": b.reason,
                "query": b.query,
            }
        )
    vac = {v.table: v for v in vacuumed}
    tables = [
        t.model_dump()
        | (
            {"result": vac[t.table].outcome, "detail": vac[t.table].detail}
            if t.table in vac
            else {"result": "dry_run" if dry_run and t.vacuum else "none"}
        )
        for t in plan.tables
    ]
    largest = sorted(diagnosis.tables, key=lambda t: t.total_bytes, reverse=True)[:10]
    return {
        "database": diagnosis.database,
        "role": diagnosis.privileges.role,
        "dry_run": dry_run,
        "threshold_s": plan.threshold_s,
        "connections": {
            "used": diagnosis.connections_used,
            "limit": diagnosis.connections_limit,
            "pct": diagnosis.connections_pct,
        },
        "backends": backends,
        "tables": tables,
        "index_hints": [h.model_dump() for h in plan.index_hints],
        "slow_statements": [s.model_dump() for s in diagnosis.slow_statements or []],
        "largest_tables": [{"table": t.qualified, "bytes": t.total_bytes} for t in largest],
        "notes": list(diagnosis.notes),
    }
