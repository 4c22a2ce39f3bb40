"""The Ledger: the incident store, the source of truth for incidents.

All methods are synchronous (a pooled SQLAlchemy engine); async callers run them in a thread, e.g.
``await anyio.to_thread.run_sync(ledger.record_alert, alert)``. Every connection failure raises
LedgerUnavailableError with one line naming where the database is, never its password.
"""

from __future__ import annotations

from types import TracebackType

from sqlalchemy.engine import URL

from runbook.clock import Clock, SystemClock
from runbook.ledger.actions import ActionsMixin
from runbook.ledger.alerts import AlertsMixin
from runbook.ledger.digests import DigestsMixin
from runbook.ledger.engine import create_ledger_engine, migrate
from runbook.ledger.incidents import IncidentsMixin
from runbook.ledger.queue import QueueMixin
from runbook.ledger.reviews import ReviewsMixin
from runbook.ledger.snapshots import SnapshotsMixin
from runbook.ledger.url import describe_url, resolve_url


class Ledger(
    AlertsMixin,
    IncidentsMixin,
    ActionsMixin,
    QueueMixin,
    SnapshotsMixin,
    ReviewsMixin,
    DigestsMixin,
):
    """The incident store over SQLite or PostgreSQL.

    Args:
        url: SQLAlchemy URL; default ``RUNBOOK_LEDGER_URL``, else ``$RUNBOOK_HOME/ledger.db``.
        clock: where every timestamp comes from (default: real time).
        auto_migrate: bring the schema up to date now (safe with concurrent processes).

    Raises:
        LedgerUnavailableError: the database cannot be reached (one line, password masked).
        ConfigError: the URL cannot be parsed.

    Example:
        ```python
        from runbook.ledger import open_ledger

        with open_ledger() as ledger:
            outcome = ledger.record_alert(alert)
        ```
    """

    def __init__(
        self, url: str | URL | None = None, *, clock: Clock | None = None, auto_migrate: bool = True
    ) -> None:
        engine = create_ledger_engine(resolve_url(url))
        super().__init__(engine, clock or SystemClock())
        if auto_migrate:
            try:
                migrate(engine)
            except BaseException:
                engine.dispose()
                raise

    def describe(self) -> str:
        """The ledger's URL with any password masked."""
        return describe_url(self.url)

    def close(self) -> None:
        """Close every pooled connection. The Ledger must not be used afterwards."""
        self.engine.dispose()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Ledger({self.describe()!r})"


def open_ledger(url: str | URL | None = None, *, clock: Clock | None = None) -> Ledger:
    """Open the ledger, creating or upgrading its schema on first use.

    Args:
        url: SQLAlchemy URL; default ``RUNBOOK_LEDGER_URL``, else ``$RUNBOOK_HOME/ledger.db``.
        clock: where every timestamp comes from (default: real time).

    Returns:
        The open Ledger; close it (or use it as a context manager) when done.

    Raises:
        LedgerUnavailableError: the database cannot be reached (one line, password masked).
    """
    return Ledger(url, clock=clock)
