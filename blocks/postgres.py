"""The production PostgreSQL the database playbook inspects and, when allowed, acts on.

Configuration only: the DSN (secret), which backends are never touched, and the thresholds and
timeouts the playbook applies. ``connect_kwargs`` hands psycopg plain values; no query runs here.
"""

from __future__ import annotations

import math
from typing import Any

import psycopg
from prefect.blocks.core import Block
from psycopg.conninfo import conninfo_to_dict
from pydantic import ConfigDict, Field, SecretStr, field_validator

APPLICATION_NAME = "runbook"
_DSN_FORMS = "'host=db.example.com port=5432 dbname=app user=runbook_bot' or 'postgresql://runbook_bot@db.example.com:5432/app'"


def _parse_dsn(dsn: str) -> dict[str, Any]:
    """libpq's view of ``dsn``; ValueError with a message that never repeats the DSN.

    libpq's own parse errors quote the offending token, which may be the password, so they are
    not passed on.
    """
    if not dsn.strip():
        raise ValueError(f"dsn is empty; give a libpq connection string such as {_DSN_FORMS}")
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.Error:
        raise ValueError(
            f"dsn is not a valid libpq connection string or postgresql:// URL; expected e.g. {_DSN_FORMS}"
        ) from None
    port = str(params.get("port") or "5432")
    if not all(p.strip().isdigit() for p in port.split(",")):
        raise ValueError("dsn has a port that is not a number; fix the port")
    return params


class PostgresTarget(Block):
    """A PostgreSQL database the incident playbook inspects and mitigates (long queries, locks).

    Example:
        ```python
        import psycopg

        from blocks.postgres import PostgresTarget

        postgres_target = PostgresTarget.load("BLOCK_NAME")
        with psycopg.connect(**postgres_target.connect_kwargs()) as conn:
            ...
        ```
    """

    # a rejected DSN must not come back in the validation error's text: it holds the password
    # (``errors()`` still returns the caller's own input, as pydantic always does)
    model_config = ConfigDict(hide_input_in_errors=True)

    _block_type_name = "Postgres Target"
    _block_type_slug = "postgres-target"
    _logo_url = "https://www.postgresql.org/media/img/about/press/elephant.png"  # type: ignore[assignment]
    _description = "A PostgreSQL database the incident runbook inspects and mitigates."
    _documentation_url = "https://www.postgresql.org/docs/current/libpq-connect.html"  # type: ignore[assignment]

    dsn: SecretStr = Field(
        description=(
            "A libpq connection string or postgresql:// URL of a role with pg_signal_backend and "
            "pg_read_all_stats."
        )
    )
    protected_roles: list[str] = Field(
        default_factory=lambda: ["postgres", "supabase_admin", "rdsadmin", "replicator"],
        description="Roles whose backends are never cancelled or terminated.",
    )
    protected_application_names: list[str] = Field(
        default_factory=lambda: ["pg_dump", "pgbackrest", "wal-g", "supabase-migrations"],
        description="Application names whose backends are never cancelled or terminated.",
    )
    long_query_threshold_s: float = Field(
        default=300.0,
        gt=0,
        description="A query running longer than this many seconds counts as long-running.",
    )
    statement_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description="The statement_timeout of the runbook's own sessions, in seconds.",
    )
    connect_timeout_s: float = Field(
        default=5.0, gt=0, description="Seconds allowed to connect before giving up."
    )

    @field_validator("dsn")
    @classmethod
    def _check_dsn(cls, value: SecretStr) -> SecretStr:
        _parse_dsn(value.get_secret_value())
        return value

    @field_validator("protected_roles", "protected_application_names")
    @classmethod
    def _check_names(cls, value: list[str]) -> list[str]:
        cleaned = [v.strip() for v in value]
        if any(not v for v in cleaned):
            raise ValueError("names must not be empty")
        return list(dict.fromkeys(cleaned))

    def connect_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``psycopg.connect`` / ``psycopg.AsyncConnection.connect``.

        The session gets ``statement_timeout`` (a task timeout cannot interrupt a blocking query)
        and application_name "runbook" (so the playbook recognises, and spares, its own backends).
        Options already in the DSN are kept.

        Returns:
            {"conninfo", "application_name", "options", "connect_timeout"}: plain values.
        """
        dsn = self.dsn.get_secret_value()
        existing = str(_parse_dsn(dsn).get("options") or "")
        timeout_ms = max(1, round(self.statement_timeout_s * 1000))
        options = f"{existing} -c statement_timeout={timeout_ms}".strip()
        return {
            "conninfo": dsn,
            "application_name": APPLICATION_NAME,
            "options": options,
            # libpq counts whole seconds (and treats 1 as 2): round up, never down to "wait forever"
            "connect_timeout": max(1, math.ceil(self.connect_timeout_s)),
        }

    def describe(self) -> str:
        """``host:port/dbname`` for logs and messages; never the user's password.

        Returns:
            e.g. "db.example.com:5432/app" (libpq's defaults filled in when the DSN omits them).
        """
        params = _parse_dsn(self.dsn.get_secret_value())
        host = params.get("host") or params.get("hostaddr") or "localhost"
        port = params.get("port") or "5432"
        dbname = params.get("dbname") or params.get("user") or "postgres"
        return f"{host}:{port}/{dbname}"
