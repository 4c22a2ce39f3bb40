"""PostgresTarget: DSN validation that never leaks the password, thresholds, connect kwargs."""

from __future__ import annotations

import pytest
from pydantic import SecretStr, ValidationError

from blocks.postgres import PostgresTarget

PASSWORD = "hunter2-Sup3rS3cret"
URL = f"postgresql://runbook_bot:{PASSWORD}@db.example.com:6543/app"


def test_defaults_follow_the_runbook() -> None:
    """Defaults: 5-minute long-query threshold, 30 s statement timeout, the protected roles and apps."""
    target = PostgresTarget(dsn=SecretStr(URL))
    assert target.long_query_threshold_s == 300
    assert target.statement_timeout_s == 30 and target.connect_timeout_s == 5
    assert target.protected_roles == ["postgres", "supabase_admin", "rdsadmin", "replicator"]
    assert target.protected_application_names == [
        "pg_dump",
        "pgbackrest",
        "wal-g",
        "supabase-migrations",
    ]
    assert PASSWORD not in repr(target)


@pytest.mark.parametrize(
    "dsn",
    [
        f"host=db password={PASSWORD} oops",  # libpq would quote the stray token
        f"host=db passwd={PASSWORD}",  # unknown keyword
        f"postgresql://u:{PASSWORD}@db:5432/app?bogus=1",  # unknown URI parameter
        f"postgresql://u:{PASSWORD}@db:port/app",  # port that is not a number
        f"host=db password {PASSWORD}",  # missing '=': libpq names the password itself
        "   ",
    ],
)
def test_bad_dsn_is_rejected_without_the_password(dsn: str) -> None:
    """An unparseable DSN is rejected with a message that says what to fix and never the password."""
    with pytest.raises(ValidationError) as info:
        PostgresTarget.model_validate({"dsn": dsn})  # a raw string, as from the UI
    # errors() hands the caller back its own input by pydantic's design; the text must not show it
    text = str(info.value) + repr(info.value.errors(include_input=False))
    assert "dsn" in text and PASSWORD not in text


@pytest.mark.parametrize(
    "field", ["long_query_threshold_s", "statement_timeout_s", "connect_timeout_s"]
)
@pytest.mark.parametrize("value", [0, -1.5])
def test_thresholds_must_be_positive(field: str, value: float) -> None:
    """A threshold or timeout of zero or below is rejected, naming the field."""
    with pytest.raises(ValidationError, match=field):
        PostgresTarget.model_validate({"dsn": URL, field: value})


def test_empty_protected_names_are_rejected() -> None:
    """An empty string in a protected list is rejected (it would protect nothing by accident)."""
    with pytest.raises(ValidationError, match="protected_roles"):
        PostgresTarget(dsn=SecretStr(URL), protected_roles=["postgres", " "])


def test_connect_kwargs_are_plain_values_with_timeouts() -> None:
    """connect_kwargs sets statement_timeout in ms, application_name runbook, whole-second connect timeout."""
    target = PostgresTarget(dsn=SecretStr(URL), statement_timeout_s=2.5, connect_timeout_s=0.2)
    kwargs = target.connect_kwargs()
    assert kwargs == {
        "conninfo": URL,
        "application_name": "runbook",
        "options": "-c statement_timeout=2500",
        "connect_timeout": 1,
    }


def test_connect_kwargs_keep_the_dsns_own_options() -> None:
    """Options already in the DSN (search_path) are kept and statement_timeout appended."""
    target = PostgresTarget(dsn=SecretStr("host=db dbname=app options='-c search_path=ops'"))
    assert target.connect_kwargs()["options"] == "-c search_path=ops -c statement_timeout=30000"


@pytest.mark.parametrize(
    ("dsn", "expected"),
    [
        (URL, "db.example.com:6543/app"),
        (f"host=10.0.0.5 user=bot password={PASSWORD} dbname=orders", "10.0.0.5:5432/orders"),
        ("user=bot", "localhost:5432/bot"),
    ],
)
def test_describe_is_host_port_db_without_password(dsn: str, expected: str) -> None:
    """describe() is host:port/db with libpq's defaults filled in, never the password."""
    assert PostgresTarget(dsn=SecretStr(dsn)).describe() == expected


def test_connect_kwargs_work_with_a_real_postgres(pg_admin_dsn: str) -> None:
    """A real psycopg connection made from connect_kwargs has the statement timeout and name set."""
    import psycopg

    target = PostgresTarget(dsn=SecretStr(pg_admin_dsn), statement_timeout_s=7)
    with psycopg.connect(**target.connect_kwargs()) as conn:
        timeout = conn.execute("SHOW statement_timeout").fetchone()
        name = conn.execute("SHOW application_name").fetchone()
    assert timeout == ("7s",) and name == ("runbook",)
