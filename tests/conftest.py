"""Fixtures shared by the whole suite.

- ``require_service(name, reason)``: skip on a laptop, fail in CI (RUNBOOK_REQUIRE_SERVICES=1).
- ``pg_admin_url`` / ``pg_database``: a fresh PostgreSQL database per test session on 127.0.0.1:5432.
- ``world`` / ``sandbox_app`` / ``sandbox_transport``: the sandbox world, in-process over ASGI.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import httpx
import pytest

from runbook.sandbox.app import create_app
from runbook.sandbox.core import DEFAULT_TOKEN, World

PG_HOST = os.environ.get("RUNBOOK_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("RUNBOOK_TEST_PG_PORT", "5432"))
PG_USER = os.environ.get("RUNBOOK_TEST_PG_USER", "postgres")


def services_required() -> bool:
    return os.environ.get("RUNBOOK_REQUIRE_SERVICES", "") not in ("", "0", "false")


def require_service(name: str, reason: str) -> None:
    """A service a test needs is missing: skip here, fail in CI."""
    message = f"{name} is not available: {reason}"
    if services_required():
        pytest.fail(message + " (RUNBOOK_REQUIRE_SERVICES=1, so this fails instead of skipping)")
    pytest.skip(message)


def _pg_connect(dbname: str = "postgres"):  # type: ignore[no-untyped-def]
    import psycopg

    return psycopg.connect(
        host=PG_HOST, port=PG_PORT, user=PG_USER, dbname=dbname, autocommit=True, connect_timeout=3
    )


@pytest.fixture(scope="session")
def pg_admin_dsn() -> str:
    """libpq DSN of the maintenance database (the test run creates its own databases)."""
    try:
        with _pg_connect() as conn:
            conn.execute("SELECT 1")
    except Exception as exc:  # noqa: BLE001 - any failure means "not available"
        require_service("PostgreSQL", f"{PG_HOST}:{PG_PORT} as {PG_USER}: {exc}")
    return f"host={PG_HOST} port={PG_PORT} user={PG_USER} dbname=postgres"


def make_pg_database(prefix: str = "runbook_test") -> str:
    """Create an empty database and return its name."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with _pg_connect() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return name


def drop_pg_database(name: str) -> None:
    with _pg_connect() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def pg_database(pg_admin_dsn: str) -> Iterator[str]:
    """A database of its own for this test session; yields its name and drops it afterwards."""
    name = make_pg_database()
    yield name
    drop_pg_database(name)


@pytest.fixture
def world() -> World:
    """A fresh, seeded sandbox world."""
    return World(token=DEFAULT_TOKEN, seed=1234)


@pytest.fixture
def sandbox_app(world: World):  # type: ignore[no-untyped-def]
    return create_app(world)


@pytest.fixture
def sandbox_transport(sandbox_app) -> httpx.ASGITransport:  # type: ignore[no-untyped-def]
    """An httpx transport that serves requests from the in-process sandbox."""
    return httpx.ASGITransport(app=sandbox_app)


SANDBOX_BASE = "http://sandbox"


def sandbox_url(vendor: str) -> str:
    """The base_url a block or client uses to reach ``vendor`` in the in-process sandbox."""
    return f"{SANDBOX_BASE}/{vendor}"


@pytest.fixture(scope="session")
def prefect_api() -> Iterator[str]:
    """One Prefect test server for the whole session (it takes ~8 s to start); yields its API URL.

    Never nest another harness inside it. Its server runs no scheduler.
    """
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=60):
        url = PREFECT_API_URL.value()
        assert url, "the Prefect test harness did not set PREFECT_API_URL"
        yield url
