"""The batch statements of ``record_alerts`` in each dialect's own SQL, run on the raw driver.

Why not SQLAlchemy Core here: per row it costs ~0.2-0.4 ms of parameter processing (type
processors, stdlib JSON), more than the database's own work. These statements go through
``Connection.exec_driver_sql`` instead: still the caller's transaction and SQLAlchemy's error
wrapping (so the ledger's error translation applies), but parameters are converted here once per
batch (orjson for JSON, the schema's own UTCDateTime processor for times).

PostgreSQL takes each batch as JSON documents (``json_array_elements``) in a few constant statements
(psycopg prepares them after a few uses), joined with data-modifying CTEs so a batch costs two
round trips (three when it opens incidents); every round trip counts when the server competes for
the CPU. SQLite takes multi-row ``VALUES`` for the inserts that return ids, ``executemany`` (a loop
in C) for the rest, and ``json_each`` for key lists.
"""

from __future__ import annotations

import abc
import base64
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
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
# PostgreSQL inserts each alert with its reserved id and its incident (``PostgresBatch``)
LINKED_ALERT_COLUMNS = ("id", "incident_id", *ALERT_COLUMNS)
LINKED_ALERT_TYPES = ("bigint", "bigint", *ALERT_TYPES)
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
OUTBOX_TYPES = ("varchar", "bigint", "json", "timestamptz", "timestamptz", "int")
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


@dataclass
class Finish:
    """The batch's last writes.

    Attributes:
        now: the batch's time (updated_at of the counted incidents).
        counts: (incident id, firing alerts to add) for incidents that were already open.
        launches: outbox rows for the incidents opened.
        links: (alert id, incident id).
        events: timeline rows.
    """

    now: datetime
    counts: list[tuple[int, int]] = field(default_factory=list)
    launches: list[tuple[Any, ...]] = field(default_factory=list)
    links: list[tuple[int, int]] = field(default_factory=list)
    events: list[tuple[Any, ...]] = field(default_factory=list)


class BatchSQL(abc.ABC):
    """One dialect's batch statements. Rows are tuples in the ``*_COLUMNS`` order, converted."""

    def __init__(self, conn: sa.Connection) -> None:
        self.conn = conn
        self.time = time_processor(conn.dialect)

    @staticmethod
    @abc.abstractmethod
    def json(value: Any) -> Any:
        """A JSON column's value as this dialect's rows carry it."""

    @staticmethod
    @abc.abstractmethod
    def blob(value: bytes) -> Any:
        """A binary column's value as this dialect's rows carry it."""

    @abc.abstractmethod
    def store(self, rows: list[tuple[Any, ...]], keys: list[str]) -> tuple[list[Any], list[Any]]:
        """Insert alerts, skipping (source, delivery_id) already stored, and find the open
        incidents with these keys, locked until commit.

        Returns:
            ``(id, source, delivery_id)`` of the alerts inserted; ``(id, open_key)`` of the open
            incidents.
        """

    @abc.abstractmethod
    def delivered(self, delivery_ids: list[str]) -> list[Any]:
        """(id, incident_id, source, delivery_id) of stored alerts with these delivery ids."""

    @abc.abstractmethod
    def insert_incidents(self, rows: list[tuple[Any, ...]]) -> list[Any]:
        """Insert incidents, skipping keys already open: (id, open_key) of those inserted."""

    @abc.abstractmethod
    def finish(self, done: Finish) -> None:
        """Write what the batch decided: counts, launches, links and timeline events."""


class SQLiteBatch(BatchSQL):
    """SQLite: multi-row VALUES ... RETURNING, executemany, json_each."""

    json = staticmethod(to_json)

    @staticmethod
    def blob(value: bytes) -> bytes:
        return value

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

    def store(self, rows: list[tuple[Any, ...]], keys: list[str]) -> tuple[list[Any], list[Any]]:
        tail = "ON CONFLICT (source, delivery_id) DO NOTHING RETURNING id, source, delivery_id"
        inserted = self._values("alerts", ALERT_COLUMNS, rows, tail)
        sql = (
            "SELECT id, open_key FROM incidents WHERE open_key IN (SELECT value FROM json_each(?))"
        )
        return inserted, list(self.conn.exec_driver_sql(sql, (to_json(keys),)))

    def delivered(self, delivery_ids: list[str]) -> list[Any]:
        sql = ("SELECT id, incident_id, source, delivery_id FROM alerts "
               "WHERE delivery_id IN (SELECT value FROM json_each(?))")  # fmt: skip
        return list(self.conn.exec_driver_sql(sql, (to_json(delivery_ids),)))

    def insert_incidents(self, rows: list[tuple[Any, ...]]) -> list[Any]:
        tail = "ON CONFLICT (open_key) DO NOTHING RETURNING id, open_key"
        return self._values("incidents", INCIDENT_COLUMNS, rows, tail)

    def finish(self, done: Finish) -> None:
        run = self.conn.exec_driver_sql
        if done.counts:
            stamp = self.time(done.now)
            run("UPDATE incidents SET alert_count = alert_count + ?, updated_at = ? WHERE id = ?",
                [(n, stamp, incident) for incident, n in done.counts])  # fmt: skip
        if done.launches:
            run(_insert_one("outbox", OUTBOX_COLUMNS, "?"), done.launches)
        if done.links:
            run("UPDATE alerts SET incident_id = ? WHERE id = ?",
                [(incident, alert) for alert, incident in done.links])  # fmt: skip
        if done.events:
            run(_insert_one("timeline_events", EVENT_COLUMNS, "?"), done.events)


def _insert_one(table: str, columns: Sequence[str], mark: str) -> str:
    return f"INSERT INTO {table} ({_columns(columns)}) VALUES ({', '.join([mark] * len(columns))})"


def _from_json(columns: Sequence[str], types: Sequence[str], source: str) -> str:
    """``(columns) SELECT <typed fields> FROM jsonb_array_elements(<source>) AS r``: rows as arrays."""
    fields = []
    for i, kind in enumerate(types):
        if kind == "json":
            fields.append(f"r->{i}")
        elif kind == "bytea":
            fields.append(f"decode(r->>{i}, 'base64')")
        else:
            fields.append(f"(r->>{i})::{kind}")
    return (
        f"({_columns(columns)}) SELECT {', '.join(fields)} FROM jsonb_array_elements({source}) AS r"
    )


def _identity(value: Any) -> Any:
    return value


def _dump(value: Any) -> str:
    # naive datetimes never get here: the UTCDateTime processor makes them aware UTC
    return orjson.dumps(value).decode()


class PostgresBatch(BatchSQL):
    """PostgreSQL: the batch as one JSON document per statement, in two round trips (three when it
    opens incidents).

    Each alert row is written once, already linked: the first statement finds which alerts are
    redeliveries, locks the open incidents and reserves ids for the new alerts from the ``alerts``
    sequence; the last one inserts the new alerts with their incident and writes the counts,
    launches and timeline events. (Inserting first and linking after cost a second, non-HOT
    version of every alert row, its index entries and a foreign-key check: a third of the batch's
    time.) A concurrent batch that stores the same delivery in between makes the insert fail on
    the unique ``(source, delivery_id)``; the ledger retries the transaction, which then sees it as
    a redelivery (``is_retryable_conflict``).

    orjson writes a whole batch in one call, where psycopg's array adaptation costs Python work per
    element. Data-modifying CTEs let one statement write several tables; each table is touched by
    one CTE only.
    """

    json = staticmethod(_identity)

    @staticmethod
    def blob(value: bytes) -> str:
        return base64.b64encode(value).decode()

    # the open incidents are locked in key order, so two batches never wait for each other in a
    # cycle on them; each delivery is looked up by the unique index (the LIMIT keeps the planner
    # from a hash join over the whole table when its statistics are stale)
    STORE = ("WITH op AS (SELECT id, open_key FROM incidents "
             "WHERE open_key IN (SELECT jsonb_array_elements_text(%s::jsonb)) "
             "ORDER BY open_key FOR UPDATE) "
             "SELECT 0, id, open_key, NULL, NULL FROM op "
             "UNION ALL SELECT 1, a.id, a.source, a.delivery_id, a.incident_id "
             "FROM jsonb_array_elements(%s::jsonb) AS p CROSS JOIN LATERAL "
             "(SELECT id, source, delivery_id, incident_id FROM alerts "
             "WHERE source = p->>0 AND delivery_id = p->>1 LIMIT 1) AS a "
             "UNION ALL SELECT 2, nextval('alerts_id_seq'), NULL, NULL, NULL "
             "FROM generate_series(1, %s)")  # fmt: skip
    INCIDENTS = (f"INSERT INTO incidents {_from_json(INCIDENT_COLUMNS, INCIDENT_TYPES, '%s::jsonb')} "
                 "ON CONFLICT (open_key) DO NOTHING RETURNING id, open_key")  # fmt: skip
    FINISH = (f"WITH stored AS (INSERT INTO alerts {_from_json(LINKED_ALERT_COLUMNS, LINKED_ALERT_TYPES, '%s::jsonb')}), "
              "counted AS (UPDATE incidents SET alert_count = alert_count + (c->>1)::int, "
              "updated_at = %s FROM jsonb_array_elements(%s::jsonb) AS c "
              "WHERE incidents.id = (c->>0)::bigint), "
              f"launched AS (INSERT INTO outbox {_from_json(OUTBOX_COLUMNS, OUTBOX_TYPES, '%s::jsonb')}) "
              f"INSERT INTO timeline_events {_from_json(EVENT_COLUMNS, EVENT_TYPES, '%s::jsonb')}")  # fmt: skip

    def __init__(self, conn: sa.Connection) -> None:
        super().__init__(conn)
        self._new: list[tuple[int, tuple[Any, ...]]] = []  # (reserved id, row) to insert
        self._old: list[Any] = []  # (id, incident_id, source, delivery_id) already stored

    def store(self, rows: list[tuple[Any, ...]], keys: list[str]) -> tuple[list[Any], list[Any]]:
        pairs = [(row[0], row[1]) for row in rows]
        params = (_dump(sorted(keys)), _dump(pairs), len(rows))
        found: list[Any] = []
        fresh: list[int] = []
        stored: set[tuple[str, str]] = set()
        for kind, ident, text, delivery, incident_id in self.conn.exec_driver_sql(
            self.STORE, params
        ):
            if kind == 0:
                found.append((ident, text))
            elif kind == 1:
                self._old.append((ident, incident_id, text, delivery))
                stored.add((text, delivery))
            else:
                fresh.append(ident)
        ids = iter(fresh)
        inserted: list[Any] = []
        for row in rows:
            if (row[0], row[1]) not in stored:
                ident = next(ids)
                self._new.append((ident, row))
                inserted.append((ident, row[0], row[1]))
        return inserted, found

    def delivered(self, delivery_ids: list[str]) -> list[Any]:
        return list(self._old)  # found by ``store``'s probe; the caller keeps the ones it asked for

    def insert_incidents(self, rows: list[tuple[Any, ...]]) -> list[Any]:
        return list(self.conn.exec_driver_sql(self.INCIDENTS, (_dump(rows),)))

    def finish(self, done: Finish) -> None:
        links = dict(done.links)
        alerts = [(ident, links.get(ident), *row) for ident, row in self._new]
        params = (_dump(alerts), self.time(done.now), _dump(done.counts), _dump(done.launches),
                  _dump(done.events))  # fmt: skip
        self.conn.exec_driver_sql(self.FINISH, params)
        self._new = []


def batch_sql(conn: sa.Connection) -> BatchSQL:
    """The batch statements for the connection's dialect."""
    if conn.dialect.name == "postgresql":
        return PostgresBatch(conn)
    return SQLiteBatch(conn)
