"""Plain helpers for the ledger tests (importable by spawned worker processes too)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from runbook.ledger import open_ledger
from runbook.models import Alert, AlertStatus

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def make_alert(delivery_id: str, dedup_key: str, **fields: Any) -> Alert:
    """A firing Alertmanager-like alert with this delivery id and dedup key."""
    fields.setdefault("source", "alertmanager")
    fields.setdefault("summary", f"problem {dedup_key}")
    return Alert(delivery_id=delivery_id, dedup_key=dedup_key, **fields)


def resolved(delivery_id: str, dedup_key: str, **fields: Any) -> Alert:
    """A resolved alert."""
    return make_alert(delivery_id, dedup_key, status=AlertStatus.RESOLVED, **fields)


def hammer(url: str, worker: int, calls: int, keys: int) -> int:
    """Record ``calls`` firing alerts over ``keys`` dedup keys; return how many opened incidents.

    Runs in a spawned process, so it opens (and first-use migrates) its own Ledger.
    """
    ledger = open_ledger(url)
    try:
        opened = 0
        for i in range(calls):
            outcome = ledger.record_alert(
                make_alert(f"w{worker}-{i}", f"key-{(i + worker) % keys}")
            )
            opened += outcome.opened
        return opened
    finally:
        ledger.close()
