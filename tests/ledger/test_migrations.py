"""Migrations: applied on first use, idempotent, matching schema.py, usable by operators."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext

import runbook.ledger
from runbook.ledger import Ledger, open_ledger
from runbook.ledger.engine import create_ledger_engine, head_revision, migrate
from runbook.ledger.schema import metadata
from runbook.ledger.url import resolve_url
from tests.ledger.helpers import make_alert

TABLES = {
    "alerts",
    "incidents",
    "timeline_events",
    "actions",
    "action_items",
    "deadlines",
    "outbox",
    "dead_letters",
}


def revision(url: str) -> str | None:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


def test_first_use_creates_the_schema_and_second_use_keeps_it(fresh_url: str) -> None:
    """open_ledger migrates an empty database to head; opening again migrates nothing, keeps data."""
    assert revision(fresh_url) is None
    with open_ledger(fresh_url) as ledger:
        assert TABLES <= set(sa.inspect(ledger.engine).get_table_names())
        ledger.record_alert(make_alert("d1", "k1"))
    assert revision(fresh_url) == head_revision()
    with open_ledger(fresh_url) as again:
        assert migrate(again.engine) is False
        assert len(again.list_incidents()) == 1


def test_migrated_schema_matches_the_metadata(ledger: Ledger) -> None:
    """The tables the migrations create are exactly those schema.py describes."""
    with ledger.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        assert compare_metadata(context, metadata) == []


def test_alembic_ini_works_for_operators(fresh_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """alembic.ini with RUNBOOK_LEDGER_URL upgrades, downgrades and upgrades again."""
    monkeypatch.setenv("RUNBOOK_LEDGER_URL", fresh_url)
    config = Config(str(Path(runbook.ledger.__file__).with_name("alembic.ini")))
    config.attributes["configure_logger"] = False  # keep the test run's logging as it is
    command.upgrade(config, "head")
    assert revision(fresh_url) == head_revision()
    command.downgrade(config, "base")
    assert revision(fresh_url) is None
    command.upgrade(config, "head")
    with open_ledger(fresh_url) as ledger:
        assert migrate(ledger.engine) is False


def test_sqlite_connections_use_wal_busy_timeout_and_foreign_keys(tmp_path: Path) -> None:
    """Every SQLite connection has WAL, a 30 s busy timeout and foreign keys on."""
    engine = create_ledger_engine(resolve_url(f"sqlite:///{tmp_path / 'l.db'}"))
    try:
        with engine.connect() as conn:
            pragma = {
                name: conn.exec_driver_sql(f"PRAGMA {name}").scalar()
                for name in ("journal_mode", "busy_timeout", "foreign_keys")
            }
        assert pragma == {"journal_mode": "wal", "busy_timeout": 30000, "foreign_keys": 1}
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_postgres_sessions_have_a_statement_timeout(shared_pg_url: str) -> None:
    """PostgreSQL sessions of the ledger run with a 30 s statement_timeout."""
    with open_ledger(shared_pg_url) as ledger, ledger.engine.connect() as conn:
        assert conn.exec_driver_sql("SHOW statement_timeout").scalar() == "30s"
