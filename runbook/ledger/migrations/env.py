"""Alembic environment for the ledger.

Used two ways: programmatically by ``runbook.ledger.engine.migrate`` (which passes an open connection
in ``config.attributes["connection"]`` while holding the migration lock), and by operators with
``alembic -c runbook/ledger/alembic.ini upgrade head`` (URL from ``sqlalchemy.url`` if set, else
``RUNBOOK_LEDGER_URL``, else the default SQLite file).
"""

from __future__ import annotations

from logging.config import fileConfig

from alembic import context

from runbook.ledger.engine import create_ledger_engine
from runbook.ledger.schema import metadata
from runbook.ledger.url import resolve_url

config = context.config
if config.config_file_name and config.attributes.get("configure_logger", True):
    # only the operator's command line configures logging; the runbook's own logging stays as is
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def _url() -> str | None:
    return config.get_main_option("sqlalchemy.url") or None


def run_offline() -> None:
    """Emit SQL for ``alembic upgrade --sql`` without connecting."""
    context.configure(
        url=resolve_url(_url()),
        target_metadata=metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    """Migrate through the given connection, or through a fresh engine for operators.

    DDL is transactional on both backends (the ledger's SQLite engine emits BEGIN IMMEDIATE
    itself), so a failed migration leaves nothing half-done and concurrent first uses serialise.
    """
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection, target_metadata=metadata, transactional_ddl=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_ledger_engine(resolve_url(_url()))
    try:
        with engine.connect() as conn:
            context.configure(connection=conn, target_metadata=metadata, transactional_ddl=True)
            with context.begin_transaction():
                context.run_migrations()
            conn.commit()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
