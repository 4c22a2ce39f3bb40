"""The ledger's tables, as SQLAlchemy Core metadata.

The migrations in ``migrations/versions`` create exactly these tables; a test compares the two. Times
are stored in UTC and always come back timezone-aware, on SQLite (which has no time zones) as well
as on PostgreSQL (``timestamptz``).

The rule "at most one open incident per dedup key" lives in the database: ``incidents.open_key`` is
the dedup key while the incident is open and NULL otherwise, under a UNIQUE constraint (NULLs never
collide), so concurrent writers cannot open two incidents for one problem.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

# one naming convention, so the migration and this metadata agree on constraint names
NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# BIGINT ids on PostgreSQL; SQLite only auto-numbers a column declared exactly INTEGER PRIMARY KEY
ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

OPEN_STATUS_VALUES = ("detected", "triaging", "mitigating", "monitoring")
INCIDENT_STATUS_VALUES = (*OPEN_STATUS_VALUES, "resolved", "closed", "review_scheduled", "reviewed")
SEVERITY_VALUES = ("P0", "P1", "P2", "P3")
ACTION_STATUS_VALUES = ("planned", "applied", "failed", "skipped")
ACTION_ITEM_STATUS_VALUES = ("open", "in_progress", "done")


def in_values(column: str, values: tuple[str, ...]) -> str:
    """SQL text of a CHECK that ``column`` holds one of ``values``."""
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """A timestamp stored in UTC that always reads back timezone-aware.

    Naive datetimes given to it are taken to be UTC already (the project only makes aware ones).
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        # SQLite stores text without an offset; all values in UTC keep them comparable as text
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)  # type: ignore[no-any-return]
        return value.astimezone(UTC)  # type: ignore[no-any-return]


metadata = sa.MetaData(naming_convention=NAMING)


def _fk_incident(nullable: bool = False) -> sa.Column[Any]:
    return sa.Column("incident_id", ID, sa.ForeignKey("incidents.id"), nullable=nullable)


incidents = sa.Table(
    "incidents",
    metadata,
    sa.Column("id", ID, primary_key=True, autoincrement=True),
    sa.Column("dedup_key", sa.String(512), nullable=False),
    sa.Column("title", sa.String(512), nullable=False),
    sa.Column("service", sa.String(200), nullable=False, server_default=""),
    sa.Column("description", sa.Text, nullable=False, server_default=""),
    sa.Column("severity", sa.String(2), nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("scenario", sa.String(100), nullable=True),
    sa.Column("detected_at", UTCDateTime, nullable=False),
    sa.Column("acknowledged_at", UTCDateTime, nullable=True),
    sa.Column("mitigated_at", UTCDateTime, nullable=True),
    sa.Column("resolved_at", UTCDateTime, nullable=True),
    sa.Column("closed_at", UTCDateTime, nullable=True),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Column("alert_count", sa.Integer, nullable=False, server_default="0"),
    sa.Column("escalation_level", sa.Integer, nullable=False, server_default="0"),
    sa.Column("ticket_ref", sa.String(200), nullable=True),
    sa.Column("diagnosis", sa.JSON, nullable=True),
    sa.Column("open_key", sa.String(512), nullable=True),
    sa.UniqueConstraint("open_key"),
    sa.CheckConstraint(in_values("status", INCIDENT_STATUS_VALUES), name="status"),
    sa.CheckConstraint(in_values("severity", SEVERITY_VALUES), name="severity"),
    sa.Index(None, "status"),
    sa.Index(None, "detected_at"),
)

alerts = sa.Table(
    "alerts",
    metadata,
    sa.Column("id", ID, primary_key=True, autoincrement=True),
    sa.Column("source", sa.String(50), nullable=False),
    sa.Column("delivery_id", sa.String(256), nullable=False),
    sa.Column("fingerprint", sa.String(256), nullable=False, server_default=""),
    sa.Column("dedup_key", sa.String(512), nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("summary", sa.Text, nullable=False, server_default=""),
    sa.Column("labels", sa.JSON, nullable=False),
    sa.Column("annotations", sa.JSON, nullable=False),
    sa.Column("started_at", UTCDateTime, nullable=True),
    sa.Column("ended_at", UTCDateTime, nullable=True),
    sa.Column("severity_hint", sa.String(2), nullable=True),
    sa.Column("service", sa.String(200), nullable=False, server_default=""),
    sa.Column("links", sa.JSON, nullable=False),
    sa.Column("received_at", UTCDateTime, nullable=False),
    sa.Column("raw_body", sa.LargeBinary, nullable=False),
    _fk_incident(nullable=True),
    sa.UniqueConstraint("source", "delivery_id"),
    sa.Index(None, "incident_id"),
)

timeline_events = sa.Table(
    "timeline_events",
    metadata,
    sa.Column("id", ID, primary_key=True, autoincrement=True),
    _fk_incident(),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Column("kind", sa.String(50), nullable=False),
    sa.Column("phase", sa.String(20), nullable=True),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("actor", sa.String(100), nullable=False),
    sa.Column("data", sa.JSON, nullable=False),
    sa.Index(None, "incident_id", "at"),
)

actions = sa.Table(
    "actions",
    metadata,
    sa.Column("id", ID, primary_key=True, autoincrement=True),
    _fk_incident(),
    sa.Column("idempotency_key", sa.String(512), nullable=False),
    sa.Column("kind", sa.String(100), nullable=False),
    sa.Column("target", sa.String(512), nullable=False, server_default=""),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("plan", sa.JSON, nullable=False),
    sa.Column("result", sa.JSON, nullable=False),
    sa.Column("actor", sa.String(100), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.UniqueConstraint("idempotency_key"),
    sa.CheckConstraint(in_values("status", ACTION_STATUS_VALUES), name="status"),
    sa.Index(None, "incident_id"),
)

action_items = sa.Table(
    "action_items",
    metadata,
    sa.Column("id", ID, primary_key=True, autoincrement=True),
    _fk_incident(),
    sa.Column("title", sa.String(512), nullable=False),
    sa.Column("owner", sa.String(200), nullable=False, server_default=""),
    sa.Column("due_at", UTCDateTime, nullable=True),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("source", sa.String(50), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.CheckConstraint(in_values("status", ACTION_ITEM_STATUS_VALUES), name="status"),
    sa.Index(None, "incident_id"),
)

deadlines = sa.Table(
    "deadlines",
    metadata,
    sa.Column("id", ID, primary_key=True, autoincrement=True),
    _fk_incident(),
    sa.Column("phase", sa.String(50), nullable=False),
    sa.Column("due_at", UTCDateTime, nullable=False),
    sa.Column("met_at", UTCDateTime, nullable=True),
    sa.Column("escalated_at", UTCDateTime, nullable=True),
    sa.UniqueConstraint("incident_id", "phase"),
    sa.Index(None, "due_at"),
)

outbox = sa.Table(
    "outbox",
    metadata,
    sa.Column("id", ID, primary_key=True, autoincrement=True),
    sa.Column("kind", sa.String(100), nullable=False),
    _fk_incident(nullable=True),
    sa.Column("payload", sa.JSON, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("available_at", UTCDateTime, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("dispatched_at", UTCDateTime, nullable=True),
    sa.Index(None, "dispatched_at", "available_at"),
)

dead_letters = sa.Table(
    "dead_letters",
    metadata,
    sa.Column("id", ID, primary_key=True, autoincrement=True),
    sa.Column("source", sa.String(50), nullable=False),
    sa.Column("received_at", UTCDateTime, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("headers", sa.JSON, nullable=False),
    sa.Column("raw_body", sa.LargeBinary, nullable=False),
    sa.Index(None, "received_at"),
)

# the source of each edge-function version seen while healthy: the Management API serves only the
# current body, so this is what "redeploy the last good version" redeploys
function_snapshots = sa.Table(
    "function_snapshots",
    metadata,
    sa.Column("id", ID, primary_key=True, autoincrement=True),
    sa.Column("project_ref", sa.String(64), nullable=False),
    sa.Column("slug", sa.String(200), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("entrypoint_path", sa.String(500), nullable=False),
    sa.Column("body", sa.LargeBinary, nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("taken_at", UTCDateTime, nullable=False),
    sa.UniqueConstraint("project_ref", "slug", "version"),
)
