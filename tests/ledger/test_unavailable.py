"""An unreachable ledger raises one line of LedgerUnavailableError, never the password."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from runbook.errors import LedgerUnavailableError, TransientError
from runbook.ledger import Ledger, open_ledger
from runbook.ledger import engine as engine_module
from tests.conftest import PG_HOST, PG_PORT, _pg_connect, drop_pg_database, make_pg_database
from tests.ledger.conftest import pg_url

PASSWORD = "hunter2-very-secret"


def test_unreachable_postgres_is_one_line_without_the_password() -> None:
    """Port 1 on 127.0.0.1 gives a transient one-liner naming host:port, with the password masked."""
    with pytest.raises(LedgerUnavailableError) as caught:
        open_ledger(f"postgresql+psycopg://runbook:{PASSWORD}@127.0.0.1:1/runbook")
    message = str(caught.value)
    assert message == (
        "cannot reach the ledger database at 127.0.0.1:1 (connection refused); "
        "check RUNBOOK_LEDGER_URL"
    )
    assert PASSWORD not in message and "\n" not in message
    assert isinstance(caught.value, TransientError)


def test_unopenable_sqlite_file_names_the_path(tmp_path: Path) -> None:
    """A SQLite file in a missing folder gives a one-liner naming the path."""
    path = tmp_path / "missing" / "ledger.db"
    with pytest.raises(LedgerUnavailableError) as caught:
        open_ledger(f"sqlite:///{path}")
    assert str(caught.value) == (
        f"cannot open the ledger database at {path} (unable to open database file); "
        "check RUNBOOK_LEDGER_URL"
    )


@pytest.mark.postgres
def test_database_vanishing_under_an_open_ledger_is_unavailable(pg_admin_dsn: str) -> None:
    """When the database goes away mid-life, calls raise LedgerUnavailableError, not driver errors:
    the first on the connection it had (used a moment ago, so not pinged: "connection lost"), the
    next one, on a new connection, names the missing database."""
    name = make_pg_database("runbook_ledger")
    ledger: Ledger = open_ledger(pg_url(name))
    try:
        ledger.list_incidents()
        drop_pg_database(name)
        with pytest.raises(LedgerUnavailableError, match=f"at {PG_HOST}:{PG_PORT} "):
            ledger.list_incidents()
        with pytest.raises(
            LedgerUnavailableError, match=f'at {PG_HOST}:{PG_PORT} .*"{name}" does not exist'
        ):
            ledger.list_incidents()
    finally:
        ledger.close()
        drop_pg_database(name)


def _terminate_backends(name: str) -> int:
    """Kill every server process connected to database ``name`` (a server restart, as seen by the
    pool); returns how many."""
    with _pg_connect() as conn:
        row = conn.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        ).fetchone()
    return int(row[0]) if row else 0


@pytest.mark.postgres
def test_idle_pooled_connection_that_died_is_replaced_before_use(
    pg_admin_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pooled connection idle for PING_IDLE_S is pinged at checkout: when its server process is
    gone (a restart), the pool replaces it and the call succeeds. A connection used a moment ago is
    not pinged (no round trip on a busy path): if it died, that one call is unavailable (the
    gateway's 503, which senders retry) and the next call gets a fresh connection."""
    monkeypatch.setattr(engine_module, "PING_IDLE_S", 0.2)
    name = make_pg_database("runbook_ledger")
    ledger: Ledger = open_ledger(pg_url(name))
    try:
        ledger.list_incidents()
        assert _terminate_backends(name) >= 1
        time.sleep(0.3)
        assert ledger.list_incidents() == []  # pinged, replaced, answered
        monkeypatch.setattr(engine_module, "PING_IDLE_S", 60.0)
        assert _terminate_backends(name) >= 1
        with pytest.raises(LedgerUnavailableError, match="connection lost"):
            ledger.list_incidents()
        assert ledger.list_incidents() == []
    finally:
        ledger.close()
        drop_pg_database(name)
