"""The incident store: SQLAlchemy Core + Alembic, SQLite by default, PostgreSQL through psycopg.

``open_ledger()`` migrates on first use and returns a ``Ledger``; see ``runbook.ledger.store``.
"""

from runbook.ledger.alerts import LAUNCH_INCIDENT
from runbook.ledger.records import AlertIntake, AlertOutcome, DeadLetter, Deadline, OutboxItem
from runbook.ledger.store import Ledger, open_ledger
from runbook.ledger.url import describe_url, resolve_url

__all__ = [
    "LAUNCH_INCIDENT",
    "AlertIntake",
    "AlertOutcome",
    "DeadLetter",
    "Deadline",
    "Ledger",
    "OutboxItem",
    "describe_url",
    "open_ledger",
    "resolve_url",
]
