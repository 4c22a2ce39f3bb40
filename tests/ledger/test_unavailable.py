"""An unreachable ledger raises one line of LedgerUnavailableError, never the password."""

from __future__ import annotations

from pathlib import Path

import pytest

from runbook.errors import LedgerUnavailableError, TransientError
from runbook.ledger import Ledger, open_ledger
from tests.conftest import PG_HOST, PG_PORT, drop_pg_database, make_pg_database
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
    """When the database goes away mid-life, calls raise LedgerUnavailableError, not driver errors."""
    name = make_pg_database("runbook_ledger")
    ledger: Ledger = open_ledger(pg_url(name))
    try:
        ledger.list_incidents()
        drop_pg_database(name)
        with pytest.raises(
            LedgerUnavailableError, match=f'at {PG_HOST}:{PG_PORT} .*"{name}" does not exist'
        ):
            ledger.list_incidents()
    finally:
        ledger.close()
        drop_pg_database(name)
