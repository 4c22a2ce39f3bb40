"""Fixtures for the ledger tests: the same tests run on SQLite and on PostgreSQL.

- ``backend``: "sqlite" or "postgres" (the latter skips on a laptop without PostgreSQL and fails in
  CI, through the shared ``pg_admin_dsn`` fixture).
- ``fresh_url``: an empty, never-migrated database of that backend.
- ``ledger``: an open, migrated, empty Ledger on a ManualClock (``clock``) starting at ``T0``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from runbook.clock import ManualClock
from runbook.ledger import Ledger, open_ledger
from runbook.ledger.schema import metadata
from tests.conftest import PG_HOST, PG_PORT, PG_USER, drop_pg_database, make_pg_database
from tests.ledger.helpers import T0


def pg_url(database: str) -> str:
    """The SQLAlchemy URL of a test database on the shared PostgreSQL server."""
    return f"postgresql+psycopg://{PG_USER}@{PG_HOST}:{PG_PORT}/{database}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest) -> str:
    """Which database the test runs on."""
    if request.param == "postgres":
        request.getfixturevalue("pg_admin_dsn")
    return str(request.param)


@pytest.fixture
def fresh_url(backend: str, tmp_path) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """An empty database that no ledger has touched yet."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'ledger.db'}"
        return
    name = make_pg_database("runbook_ledger")
    yield pg_url(name)
    drop_pg_database(name)


@pytest.fixture(scope="session")
def shared_pg_url(pg_admin_dsn: str) -> Iterator[str]:
    """One PostgreSQL database for the session's ledger tests (emptied before each test)."""
    name = make_pg_database("runbook_ledger")
    yield pg_url(name)
    drop_pg_database(name)


@pytest.fixture
def clock() -> ManualClock:
    """The ledger's clock; tests move it with ``advance``."""
    return ManualClock(T0)


@pytest.fixture
def ledger(
    backend: str, request: pytest.FixtureRequest, tmp_path, clock: ManualClock
) -> Iterator[Ledger]:  # type: ignore[no-untyped-def]
    """A migrated, empty ledger on the backend under test."""
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'ledger.db'}"
    else:
        url = request.getfixturevalue("shared_pg_url")
    ledger = open_ledger(url, clock=clock)
    if backend == "postgres":
        names = ", ".join(table.name for table in metadata.sorted_tables)
        with ledger.engine.begin() as conn:
            conn.execute(sa.text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
    yield ledger
    ledger.close()
