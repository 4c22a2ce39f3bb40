"""The batch statements of ``record_alerts`` in each dialect's own SQL, run on the raw driver.

Why not SQLAlchemy Core here: per row it costs ~0.2-0.4 ms of parameter processing (type
processors, stdlib JSON), more than the database's own work. These statements go through
``Connection.exec_driver_sql`` instead: still the caller's transaction and SQLAlchemy's error
wrapping (so the ledger's error translation applies), but parameters are converted here once per
batch (orjson for JSON, the schema's own UTCDateTime processor for times).

PostgreSQL takes each batch as arrays (``unnest``): one constant statement per operation, which
psycopg prepares after a few uses. SQLite takes multi-row ``VALUES`` for the inserts that return
ids, ``executemany`` (a loop in C) for the rest, and ``json_each`` for key lists.
"""

from __future__ import annotations

import abc
import functools
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import orjson
import sqlalchemy as sa

from runbook.ledger.schema import UTCDateTime

ALERT_COLUMNS = (
    "source", "delivery_id", "fingerprint", "dedup_key", "status", "summary", "labels",
    "annotations", "started_at", "ended_at", "severity_hint", "service", "links", "received_at",
    "raw_body",
)  # fmt: skip
ALERT_TYPES = (
    "varchar", "varchar", "varchar", "varchar", "varchar", "text", "json", "json", "timestamptz",
    "timestamptz", "varchar", "varchar", "json", "timestamptz", "bytea",
)  # fmt: skip
INCIDENT_COLUMNS = (
    "dedup_key", "open_key", "title", "service", "description", "severity", "status", "scenario",
    "detected_at", "updated_at", "alert_count", "escalation_level",
)  # fmt: skip
INCIDENT_TYPES = (
    "varchar", "varchar", "varchar", "varchar", "text", "varchar", "varchar", "varchar",
    "timestamptz", "timestamptz", "int", "int",
)  # fmt: skip
EVENT_COLUMNS = ("incident_id", "at", "kind", "phase", "message", "actor", "data")
EVENT_TYPES = ("bigint", "timestamptz", "varchar", "varchar", "text", "varchar", "json")
OUTBOX_COLUMNS = ("kind", "incident_id", "payload", "created_at", "available_at", "attempts")
# rows per multi-row VALUES on SQLite (15 columns x 1,000 stays under its 32,766 parameters)
SQLITE_ROWS = 1000


def to_json(value: Any) -> str:
    """JSON text for a JSON column."""
    return orjson.dumps(value).decode()


@functools.cache
def time_processor(dialect: sa.Dialect) -> Callable[[datetime | None], Any]:
    """The schema's UTCDateTime bind processing for ``dialect`` (UTC; SQLite's text format)."""
    process = UTCDateTime().dialect_impl(dialect).bind_processor(dialect)
    assert process is not None  # noqa: S101 - UTCDateTime always processes
    return process


def _columns(names: Sequence[str]) -> str:
    return ", ".join(names)


class BatchSQL(abc.ABC):
    """One dialect's batch statements. Rows are tuples in the ``*_COLUMNS`` order, converted."""

    def __init__(self, conn: sa.Connection) -> None:
        self.conn = conn
        self.time = time_processor(conn.dialect)

    @abc.abstractmethod
    def insert_alerts(self, rows: list[tuple[Any, ...]]) -> list[Any]:
        """Insert alerts, skipping (source, delivery_id) already stored: (id, source, delivery_id)."""

    @abc.abstractmethod
    def open_incidents(self, keys: list[str]) -> list[Any]:
        """(id, open_key) of the open incidents with these keys, locked until commit."""

    @abc.abstractmethod
    def delivered(self, delivery_ids: list[str]) -> list[Any]:
        """(id, incident_id, source, delivery_id) of stored alerts with these delivery ids."""

    @abc.abstractmethod
    def insert_incidents(self, rows: list[tuple[Any, ...]]) -> list[Any]:
        """Insert incidents, skipping keys already open: (id, open_key) of those inserted."""

    @abc.abstractmethod
    def link(self, pairs: list[tuple[int, int]]) -> None:
        """Set ``alerts.incident_id`` for (alert id, incident id) pairs."""

    @abc.abstractmethod
    def insert_events(self, rows: list[tuple[Any, ...]]) -> None:
        """Insert timeline events."""

    @abc.abstractmethod
    def count(self, counts: list[tuple[int, int]], now: datetime) -> None:
        """Add n alerts to each (incident id, n) and stamp its updated_at with ``now``."""

    @abc.abstractmethod
    def insert_outbox(self, rows: list[tuple[Any, ...]]) -> None:
        """Insert outbox rows."""


class SQLiteBatch(BatchSQL):
    """SQLite: multi-row VALUES ... RETURNING, executemany, json_each."""

    def _values(self, table: str, columns: Sequence[str], rows: list[tuple[Any, ...]],
                tail: str) -> list[Any]:  # fmt: skip
        found: list[Any] = []
        one = "(" + ", ".join("?" * len(columns)) + ")"
        for start in range(0, len(rows), SQLITE_ROWS):
            chunk = rows[start : start + SQLITE_ROWS]
            sql = (f"INSERT INTO {table} ({_columns(columns)}) VALUES "
                   f"{', '.join([one] * len(chunk))} {tail}")  # fmt: skip
            found.extend(self.conn.exec_driver_sql(sql, tuple(v for row in chunk for v in row)))
        return found

    def insert_alerts(self, rows: list[tuple[Any, ...]]) -> list[Any]:
        tail = "ON CONFLICT (source, delivery_id) DO NOTHING RETURNING id, source, delivery_id"
        return self._values("alerts", ALERT_COLUMNS, rows, tail)

    def open_incidents(self, keys: list[str]) -> list[Any]:
        sql = (
            "SELECT id, open_key FROM incidents WHERE open_key IN (SELECT value FROM json_each(?))"
        )
        return list(self.conn.exec_driver_sql(sql, (to_json(keys),)))

    def delivered(self, delivery_ids: list[str]) -> list[Any]:
        sql = ("SELECT id, incident_id, source, delivery_id FROM alerts "
               "WHERE delivery_id IN (SELECT value FROM json_each(?))")  # fmt: skip
        return list(self.conn.exec_driver_sql(sql, (to_json(delivery_ids),)))

    def insert_incidents(self, rows: list[tuple[Any, ...]]) -> list[Any]:
        tail = "ON CONFLICT (open_key) DO NOTHING RETURNING id, open_key"
        return self._values("incidents", INCIDENT_COLUMNS, rows, tail)

    def link(self, pairs: list[tuple[int, int]]) -> None:
        sql = "UPDATE alerts SET incident_id = ? WHERE id = ?"
        self.conn.exec_driver_sql(sql, [(incident, alert) for alert, incident in pairs])

    def insert_events(self, rows: list[tuple[Any, ...]]) -> None:
        self._executemany("timeline_events", EVENT_COLUMNS, rows)

    def count(self, counts: list[tuple[int, int]], now: datetime) -> None:
        sql = "UPDATE incidents SET alert_count = alert_count + ?, updated_at = ? WHERE id = ?"
        stamp = self.time(now)
        self.conn.exec_driver_sql(sql, [(n, stamp, incident) for incident, n in counts])

    def insert_outbox(self, rows: list[tuple[Any, ...]]) -> None:
        self._executemany("outbox", OUTBOX_COLUMNS, rows)

    def _executemany(self, table: str, columns: Sequence[str], rows: list[tuple[Any, ...]]) -> None:
        marks = ", ".join("?" * len(columns))
        sql = f"INSERT INTO {table} ({_columns(columns)}) VALUES ({marks})"
        self.conn.exec_driver_sql(sql, rows)


def _unnest(columns: Sequence[str], types: Sequence[str]) -> str:
    arrays = ", ".join(f"%s::{t}[]" for t in types)
    return f"({_columns(columns)}) SELECT * FROM unnest({arrays})"


def _arrays(rows: list[tuple[Any, ...]], width: int) -> tuple[list[Any], ...]:
    return tuple([row[i] for row in rows] for i in range(width))


class PostgresBatch(BatchSQL):
    """PostgreSQL: one statement per operation, the batch passed as arrays."""

    ALERTS = (f"INSERT INTO alerts {_unnest(ALERT_COLUMNS, ALERT_TYPES)} "
              "ON CONFLICT (source, delivery_id) DO NOTHING RETURNING id, source, delivery_id")  # fmt: skip
    INCIDENTS = (f"INSERT INTO incidents {_unnest(INCIDENT_COLUMNS, INCIDENT_TYPES)} "
                 "ON CONFLICT (open_key) DO NOTHING RETURNING id, open_key")  # fmt: skip
    EVENTS = f"INSERT INTO timeline_events {_unnest(EVENT_COLUMNS, EVENT_TYPES)}"
    # row locks in key order, so two batches never wait for each other in a cycle
    OPEN = ("SELECT id, open_key FROM incidents WHERE open_key = ANY(%s::varchar[]) "
            "ORDER BY open_key FOR UPDATE")  # fmt: skip
    DELIVERED = ("SELECT id, incident_id, source, delivery_id FROM alerts "
                 "WHERE delivery_id = ANY(%s::varchar[])")  # fmt: skip
    LINK = ("UPDATE alerts SET incident_id = v.incident FROM unnest(%s::bigint[], %s::bigint[]) "
            "AS v(alert, incident) WHERE alerts.id = v.alert")  # fmt: skip
    COUNT = ("UPDATE incidents SET alert_count = alert_count + v.n, updated_at = %s "
             "FROM unnest(%s::int[], %s::bigint[]) AS v(n, id) WHERE incidents.id = v.id")  # fmt: skip
    OUTBOX = (f"INSERT INTO outbox ({_columns(OUTBOX_COLUMNS)}) "
              f"VALUES ({', '.join(['%s'] * len(OUTBOX_COLUMNS))})")  # fmt: skip

    def insert_alerts(self, rows: list[tuple[Any, ...]]) -> list[Any]:
        return list(self.conn.exec_driver_sql(self.ALERTS, _arrays(rows, len(ALERT_COLUMNS))))

    def open_incidents(self, keys: list[str]) -> list[Any]:
        return list(self.conn.exec_driver_sql(self.OPEN, (sorted(keys),)))

    def delivered(self, delivery_ids: list[str]) -> list[Any]:
        return list(self.conn.exec_driver_sql(self.DELIVERED, (delivery_ids,)))

    def insert_incidents(self, rows: list[tuple[Any, ...]]) -> list[Any]:
        params = _arrays(rows, len(INCIDENT_COLUMNS))
        return list(self.conn.exec_driver_sql(self.INCIDENTS, params))

    def link(self, pairs: list[tuple[int, int]]) -> None:
        self.conn.exec_driver_sql(self.LINK, _arrays(pairs, 2))

    def insert_events(self, rows: list[tuple[Any, ...]]) -> None:
        self.conn.exec_driver_sql(self.EVENTS, _arrays(rows, len(EVENT_COLUMNS)))

    def count(self, counts: list[tuple[int, int]], now: datetime) -> None:
        params = (self.time(now), [n for _, n in counts], [i for i, _ in counts])
        self.conn.exec_driver_sql(self.COUNT, params)

    def insert_outbox(self, rows: list[tuple[Any, ...]]) -> None:
        self.conn.exec_driver_sql(self.OUTBOX, rows)


def batch_sql(conn: sa.Connection) -> BatchSQL:
    """The batch statements for the connection's dialect."""
    if conn.dialect.name == "postgresql":
        return PostgresBatch(conn)
    return SQLiteBatch(conn)
