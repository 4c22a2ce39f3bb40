"""Ledger URL resolution and password-free rendering."""

from __future__ import annotations

from pathlib import Path

import pytest

from runbook.errors import ConfigError
from runbook.ledger import describe_url, resolve_url
from runbook.ledger.url import location

PG = "postgresql+psycopg://bot:pa55word@db.internal:6543/runbook"


def test_explicit_url_wins_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """An explicit URL is used even when RUNBOOK_LEDGER_URL is set."""
    monkeypatch.setenv("RUNBOOK_LEDGER_URL", PG)
    assert str(resolve_url("sqlite:////tmp/x.db")) == "sqlite:////tmp/x.db"


def test_environment_wins_over_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without an explicit URL, RUNBOOK_LEDGER_URL is used."""
    monkeypatch.setenv("RUNBOOK_LEDGER_URL", PG)
    url = resolve_url()
    assert (url.host, url.port, url.database, url.password) == (
        "db.internal",
        6543,
        "runbook",
        "pa55word",
    )


def test_default_is_a_sqlite_file_in_runbook_home(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The default is $RUNBOOK_HOME/ledger.db, and the folder is created."""
    monkeypatch.delenv("RUNBOOK_LEDGER_URL", raising=False)
    home = tmp_path / "state" / "runbook"
    monkeypatch.setenv("RUNBOOK_HOME", str(home))
    url = resolve_url()
    assert url.get_backend_name() == "sqlite" and url.database == str(home / "ledger.db")
    assert home.is_dir()


def test_runbook_home_defaults_to_dot_runbook(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Without RUNBOOK_HOME the ledger lives in ~/.runbook/ledger.db."""
    monkeypatch.delenv("RUNBOOK_LEDGER_URL", raising=False)
    monkeypatch.delenv("RUNBOOK_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert resolve_url().database == str(tmp_path / ".runbook" / "ledger.db")
    assert (tmp_path / ".runbook").is_dir()


def test_describe_url_masks_the_password() -> None:
    """describe_url shows user, host, port and database but never the password."""
    text = describe_url(PG)
    assert (
        "pa55word" not in text and text == "postgresql+psycopg://bot:***@db.internal:6543/runbook"
    )
    assert describe_url(resolve_url(PG)) == text
    assert describe_url("sqlite:////tmp/x.db") == "sqlite:////tmp/x.db"


def test_location_names_host_and_port_or_the_file() -> None:
    """location() gives host:port (default port 5432) or the SQLite path."""
    assert location(resolve_url(PG)) == "db.internal:6543"
    assert location(resolve_url("postgresql+psycopg://u@h/db")) == "h:5432"
    assert location(resolve_url("sqlite:////tmp/x.db")) == "/tmp/x.db"


def test_unparseable_url_is_a_config_error_without_echo() -> None:
    """A URL SQLAlchemy cannot parse raises ConfigError that does not repeat it."""
    with pytest.raises(ConfigError) as caught:
        resolve_url("not a url with s3cret")
    assert "s3cret" not in str(caught.value) and "RUNBOOK_LEDGER_URL" in str(caught.value)


def test_postgres_pool_limits_come_from_the_environment(monkeypatch) -> None:
    """RUNBOOK_LEDGER_POOL_SIZE / _MAX_OVERFLOW size a PostgreSQL ledger's pool (15 connections a
    process by default); building the engine connects nothing."""
    from sqlalchemy.engine import make_url

    from runbook.ledger.engine import create_ledger_engine

    url = make_url("postgresql+psycopg://postgres@127.0.0.1:5432/none")
    default = create_ledger_engine(url)
    assert (default.pool.size(), default.pool._max_overflow) == (5, 10)  # type: ignore[attr-defined]
    monkeypatch.setenv("RUNBOOK_LEDGER_POOL_SIZE", "2")
    monkeypatch.setenv("RUNBOOK_LEDGER_MAX_OVERFLOW", "0")
    small = create_ledger_engine(url)
    assert (small.pool.size(), small.pool._max_overflow) == (2, 0)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("name", "value"),
    [("RUNBOOK_LEDGER_POOL_SIZE", "0"), ("RUNBOOK_LEDGER_POOL_SIZE", "many"),
     ("RUNBOOK_LEDGER_MAX_OVERFLOW", "-1")],
)  # fmt: skip
def test_a_bad_pool_limit_is_a_config_error_naming_the_variable(monkeypatch, name, value) -> None:
    """A pool size below 1, an overflow below 0 or a non-number is refused with the variable named."""
    from sqlalchemy.engine import make_url

    from runbook.errors import ConfigError
    from runbook.ledger.engine import create_ledger_engine

    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=name):
        create_ledger_engine(make_url("postgresql+psycopg://postgres@127.0.0.1:5432/none"))
