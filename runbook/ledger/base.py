"""What every part of the Ledger shares: the engine, the clock, transactions and error mapping."""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import exc
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, Engine

from runbook.clock import Clock
from runbook.errors import LedgerError, LedgerPermanentError
from runbook.ledger.engine import READ_ONLY, is_retryable_conflict, translate
from runbook.ledger.schema import incidents
from runbook.ledger.url import location
from runbook.models import incident_key

T = TypeVar("T")

# PostgreSQL deadlocks and serialization failures are retried this many times in all
CONFLICT_ATTEMPTS = 5


class LedgerBase:
    """Engine, clock and transaction helpers for the Ledger's parts.

    Args:
        engine: a migrated engine from ``create_ledger_engine``.
        clock: the injected clock every stamp comes from.
    """

    def __init__(self, engine: Engine, clock: Clock) -> None:
        self.engine = engine
        self.clock = clock
        # same pool; on SQLite its transactions start with a deferred BEGIN (readers do not queue)
        self._reader = engine.execution_options(**{READ_ONLY: True})
        # SQLite has one writer at a time; a writer that finds the file locked sleeps in SQLite's
        # busy handler (1, 2, 5, 10, 15, 20 ... ms) before it looks again, so a burst of concurrent
        # writes from one process's threads (a phase recording four actions at once) took up to
        # 80 ms each for ~2 ms of work. This process's writers queue on a lock instead, woken the
        # moment the one before commits; other processes still meet the busy handler.
        self._write_turn: contextlib.AbstractContextManager[Any] = (
            threading.RLock() if engine.dialect.name == "sqlite" else contextlib.nullcontext()
        )

    @property
    def url(self) -> URL:
        """The database URL (render it with ``describe_url``: it may hold a password)."""
        return self.engine.url

    @property
    def dialect(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return self.engine.dialect.name

    def _now(self) -> datetime:
        return self.clock.now()

    def _write(self, work: Callable[[sa.Connection], T]) -> T:
        """Run ``work`` in one write transaction; commit, or roll back and raise a typed error.

        ``work`` may run more than once (PostgreSQL deadlocks are retried), so it must only touch
        the database through the connection it is given.
        """
        for attempt in range(CONFLICT_ATTEMPTS):
            try:
                with self._write_turn, self.engine.begin() as conn:
                    return work(conn)
            except LedgerError:
                raise
            except TypeError as error:
                # psycopg adapts JSON itself, so a bad value surfaces as a bare TypeError
                if "JSON serializable" not in str(error):
                    raise
                raise LedgerPermanentError(
                    f"the ledger can only store JSON-serializable data ({error}); "
                    "convert the value (e.g. with model_dump(mode='json')) before passing it"
                ) from error
            except exc.SQLAlchemyError as error:
                if is_retryable_conflict(error) and attempt < CONFLICT_ATTEMPTS - 1:
                    time.sleep(random.uniform(0.002, 0.02) * (attempt + 1))  # noqa: S311
                    continue
                raise translate(self.url, error) from error
        raise AssertionError("unreachable")  # pragma: no cover

    def _read(self, work: Callable[[sa.Connection], T]) -> T:
        """Run ``work`` in one read-only transaction and return its result."""
        try:
            with self._reader.connect() as conn:
                return work(conn)
        except LedgerError:
            raise
        except exc.SQLAlchemyError as error:
            raise translate(self.url, error) from error

    def _insert(self, conn: sa.Connection, table: sa.Table) -> Any:
        """The dialect's INSERT (it has ``on_conflict_do_nothing`` / ``on_conflict_do_update``)."""
        if conn.dialect.name == "postgresql":
            return postgresql.insert(table)
        return sqlite.insert(table)

    def _incident_row(self, conn: sa.Connection, incident_id: int) -> sa.RowMapping:
        """The incident's row, or LedgerPermanentError naming it."""
        row = (
            conn.execute(sa.select(incidents).where(incidents.c.id == incident_id))
            .mappings()
            .one_or_none()
        )
        if row is None:
            raise self._no_incident(incident_id)
        return row

    def _no_incident(self, incident_id: int) -> LedgerPermanentError:
        return LedgerPermanentError(
            f"no incident {incident_key(incident_id)} in the ledger at {location(self.url)}; "
            "check the incident number (and that RUNBOOK_LEDGER_URL points at the right ledger)"
        )
