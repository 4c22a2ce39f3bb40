"""Engines for the ledger: pooling, per-connection settings, migrations and error translation.

SQLite: WAL, a 30 s busy timeout and foreign keys on every connection; SQLAlchemy emits BEGIN itself
(``BEGIN IMMEDIATE`` for writes) so a writer takes the lock up front instead of failing to upgrade a
read lock half-way. PostgreSQL: psycopg 3, pooled, with a statement timeout so a stuck query cannot
hang a worker; a pooled connection idle for ``PING_IDLE_S`` or more is pinged before use (a server
restart or an idle timeout is noticed there and the connection replaced), a busy one is not (a
ping before every transaction was one round trip in five of the gateway's group commit; a busy
connection that died fails its transaction, which the ledger reports as unavailable, and SQLAlchemy
then replaces every connection of the pool).
"""

from __future__ import annotations

import os
import re
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import event, exc
from sqlalchemy.engine import URL, Engine
from sqlalchemy.pool import StaticPool

from runbook.envvars import whole_number
from runbook.errors import LedgerPermanentError, LedgerUnavailableError
from runbook.ledger.url import ENV_URL, is_sqlite, location

MIGRATIONS = Path(__file__).with_name("migrations")
BUSY_TIMEOUT_S = 30
STATEMENT_TIMEOUT_MS = 30_000
CONNECT_TIMEOUT_S = 5
PING_IDLE_S = 1.0
# PostgreSQL connections one process may hold: the pool, and how many more it opens under load. Every
# flow-run process and gateway worker has its own pool, so their sum must stay under the server's
# max_connections (100 by default; a storm of 40 runs at 15 each exhausted it): lower these for the
# workers' runs, or put PgBouncer in front.
ENV_POOL_SIZE = "RUNBOOK_LEDGER_POOL_SIZE"
ENV_MAX_OVERFLOW = "RUNBOOK_LEDGER_MAX_OVERFLOW"
DEFAULT_POOL_SIZE = 5
DEFAULT_MAX_OVERFLOW = 10


def pool_limits(env: Mapping[str, str] | None = None) -> tuple[int, int]:
    """(pool_size, max_overflow) for a PostgreSQL ledger, from the environment or the defaults.

    Raises:
        ConfigError: a variable is not a whole number (pool size at least 1, overflow at least 0).
    """
    env = os.environ if env is None else env
    return (
        whole_number(env, ENV_POOL_SIZE, DEFAULT_POOL_SIZE, 1),
        whole_number(env, ENV_MAX_OVERFLOW, DEFAULT_MAX_OVERFLOW, 0),
    )


# any fixed 64-bit number: every process migrating this ledger takes the same lock
MIGRATION_LOCK_ID = 0x52554E424F4F4B  # "RUNBOOK"
# execution option: a read-only SQLite transaction starts with a plain (deferred) BEGIN
READ_ONLY = "runbook_read_only"


def create_ledger_engine(url: URL) -> Engine:
    """Build a pooled engine for ``url`` with the ledger's per-connection settings.

    Args:
        url: the resolved ledger URL (SQLite or PostgreSQL).

    Returns:
        The engine; nothing is connected yet.
    """
    if is_sqlite(url):
        return _sqlite_engine(url)
    connect_args: dict[str, Any] = {}
    if "connect_timeout" not in url.query:
        connect_args["connect_timeout"] = CONNECT_TIMEOUT_S
    if "options" not in url.query:
        # custom plans always: psycopg prepares a statement after a few runs, and PostgreSQL may then
        # keep a generic plan made while a table was small (a hash join over a sequential scan of
        # alerts was seen: each batch grew slower with the table, 160 -> 470 us per alert at 60k)
        connect_args["options"] = (
            f"-c statement_timeout={STATEMENT_TIMEOUT_MS} -c plan_cache_mode=force_custom_plan"
        )
    pool_size, max_overflow = pool_limits()
    engine = sa.create_engine(
        url,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_recycle=1800,
        connect_args=connect_args,
    )

    @event.listens_for(engine, "checkin")
    def _on_checkin(_dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        idle_since = record.info.pop("idle_since", None)
        if idle_since is None or time.monotonic() - idle_since < PING_IDLE_S:
            return  # just connected, or in use a moment ago
        try:
            engine.dialect.do_ping(dbapi_connection)
        except engine.dialect.loaded_dbapi.Error as error:
            # the pool drops this connection and checks out another (a new one if need be)
            raise exc.DisconnectionError(f"an idle pooled connection is gone ({error})") from error

    return engine


def _use_wal(cursor: Any) -> None:
    """Put the database file in WAL mode unless it already is, waiting out other connections.

    Switching needs an exclusive lock, and SQLite answers "database is locked" there at once rather
    than waiting out busy_timeout: several threads or processes opening a fresh file together would
    otherwise fail at random. Once the file is in WAL mode (the first switch persists) nothing waits.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    delay = 0.005
    while True:
        try:
            if str(cursor.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
                cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() + delay > deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


def _sqlite_engine(url: URL) -> Engine:
    memory = url.database in (None, "", ":memory:")
    engine = sa.create_engine(
        url,
        connect_args={"check_same_thread": False, "timeout": BUSY_TIMEOUT_S},
        # an in-memory database exists once per connection, so everyone must share that one
        poolclass=StaticPool if memory else None,
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # take transaction control away from the sqlite3 driver (see the "begin" hook)
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_S * 1000}")
        cursor.execute("PRAGMA foreign_keys = ON")
        if not memory:
            _use_wal(cursor)
            cursor.execute("PRAGMA synchronous = NORMAL")  # durable enough in WAL mode, much faster
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        if conn.get_execution_options().get(READ_ONLY):
            conn.exec_driver_sql("BEGIN")
        else:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


# --- errors -----------------------------------------------------------------------------------

_REASONS = (
    (re.compile(r"refused", re.I), "connection refused"),
    (re.compile(r"timeout expired|timed out", re.I), "connection timed out"),
    (re.compile(r"could not translate host name|name or service not known", re.I), "unknown host"),
    (
        re.compile(r"password authentication failed|authentication failed", re.I),
        "authentication failed",
    ),
    (re.compile(r'database "[^"]+" does not exist', re.I), None),
    (re.compile(r"unable to open database file", re.I), "unable to open database file"),
    (re.compile(r"database is locked", re.I), "database is locked"),
    (re.compile(r"statement timeout|canceling statement", re.I), "statement timed out"),
    (
        re.compile(
            r"server closed the connection|terminating connection|connection .* closed", re.I
        ),
        "connection lost",
    ),
)


def _reason(error: BaseException, password: str | None) -> str:
    text = str(getattr(error, "orig", None) or error)
    for pattern, reason in _REASONS:
        found = pattern.search(text)
        if found:
            return reason or found.group(0)
    first = next((line.strip() for line in text.splitlines() if line.strip()), type(error).__name__)
    if password:
        first = first.replace(password, "***")
    return first[:200]


def unavailable(url: URL, error: BaseException) -> LedgerUnavailableError:
    """A one-line LedgerUnavailableError for a connection-level failure, without the password.

    Args:
        url: the ledger URL (its host, port or path is named, never its password).
        error: the driver's or SQLAlchemy's exception.

    Returns:
        The error to raise ``from`` the cause.
    """
    verb = "open" if is_sqlite(url) else "reach"
    return LedgerUnavailableError(
        f"cannot {verb} the ledger database at {location(url)} ({_reason(error, url.password)}); "
        f"check {ENV_URL}"
    )


# a concurrent batch stored the same delivery after ours looked it up (``PostgresBatch``): run
# again, the retry sees it as a redelivery
_RETRYABLE_UNIQUE = frozenset({"uq_alerts_source_delivery_id"})


def is_retryable_conflict(error: BaseException) -> bool:
    """True for PostgreSQL deadlocks, serialization failures and a delivery stored concurrently,
    which succeed when retried."""
    orig = getattr(error, "orig", None)
    sqlstate = getattr(orig, "sqlstate", None)
    if sqlstate == "23505":
        return getattr(getattr(orig, "diag", None), "constraint_name", None) in _RETRYABLE_UNIQUE
    return sqlstate in ("40001", "40P01")


def translate(url: URL, error: exc.SQLAlchemyError) -> Exception:
    """Map a SQLAlchemy error to the project's error tree.

    Connection-level failures (OperationalError, InterfaceError, pool timeouts) become
    LedgerUnavailableError (transient); anything else is LedgerPermanentError.

    Args:
        url: the ledger URL, for the message.
        error: what SQLAlchemy raised.

    Returns:
        The error to raise ``from`` the cause.
    """
    if isinstance(error, exc.OperationalError | exc.InterfaceError | exc.TimeoutError):
        return unavailable(url, error)
    if isinstance(error, exc.DBAPIError) and error.connection_invalidated:
        return unavailable(url, error)
    return LedgerPermanentError(
        f"the ledger database at {location(url)} refused the operation "
        f"({_reason(error, url.password)}); this is a bug or a schema mismatch: "
        "run `alembic -c runbook/ledger/alembic.ini upgrade head`"
    )


# --- migrations -------------------------------------------------------------------------------


def alembic_config(url: URL | None = None) -> Config:
    """An alembic Config built in code (no alembic.ini needed at runtime).

    Args:
        url: the database URL; when None, env.py resolves it (explicit > env > default).

    Returns:
        The Config whose script_location is this package's ``migrations`` folder.
    """
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    if url is not None:
        # ConfigParser interpolation: a literal % in a password must be doubled
        config.set_main_option(
            "sqlalchemy.url", url.render_as_string(hide_password=False).replace("%", "%%")
        )
    return config


_HEAD: list[str] = []
# alembic keeps its running environment in module globals: one migration per process at a time
_ALEMBIC_IN_PROCESS = threading.Lock()


def head_revision() -> str:
    """The newest migration revision shipped with this package."""
    if not _HEAD:
        head = ScriptDirectory.from_config(alembic_config()).get_current_head()
        _HEAD.append(head or "")
    return _HEAD[0]


@contextmanager
def _migration_lock(conn: sa.Connection) -> Iterator[None]:
    # SQLite serialises writers with BEGIN IMMEDIATE already; PostgreSQL needs an explicit lock so
    # concurrent first uses do not race to create the same tables
    if conn.dialect.name != "postgresql":
        yield
        return
    conn.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": MIGRATION_LOCK_ID})
    conn.commit()
    try:
        yield
    finally:
        conn.rollback()
        conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": MIGRATION_LOCK_ID})
        conn.commit()


def migrate(engine: Engine) -> bool:
    """Bring the ledger's schema to the newest revision, if it is not there yet.

    Safe to call from several processes at once.

    Args:
        engine: an engine from ``create_ledger_engine``.

    Returns:
        True when migrations ran, False when the schema was already current.

    Raises:
        LedgerUnavailableError: the database cannot be reached.
    """
    head = head_revision()
    try:
        with engine.connect() as conn:
            if MigrationContext.configure(conn).get_current_revision() == head:
                return False
            conn.rollback()
            with _ALEMBIC_IN_PROCESS, _migration_lock(conn):
                config = alembic_config(engine.url)
                config.attributes["connection"] = conn
                command.upgrade(config, "head")
                conn.commit()
            return True
    except exc.SQLAlchemyError as error:
        raise translate(engine.url, error) from error
