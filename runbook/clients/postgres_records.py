"""What the database playbook reads and does, as records (pure data: no I/O)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from runbook.clients.postgres_sql import QUERY_TEXT_LIMIT


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
    columns: dict[str, bool] = Field(
        default_factory=dict,
        description="Column -> whether it already leads an index (read for index-hint candidates).",
    )

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


class IndexResult(BaseModel):
    """What ``CREATE INDEX CONCURRENTLY`` did for one table and column."""

    table: str
    column: str
    index: str = ""
    outcome: str = Field(description="created, exists, skipped, not_found or failed.")
    seconds: float = 0.0
    detail: str = ""
