"""Run options never carry a secret into Prefect's stored run parameters."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from flows.runtime import Options


def test_ledger_url_with_a_password_is_refused() -> None:
    """A ledger URL with a password is rejected, saying where the password belongs, without echoing it."""
    with pytest.raises(ValidationError) as info:
        Options(ledger_url="postgresql+psycopg://bot:hunter2@db:5432/runbook")
    assert "RUNBOOK_LEDGER_URL" in str(info.value)
    assert "hunter2" not in str(info.value)


def test_ledger_url_without_a_password_is_kept() -> None:
    """URLs without a password (and SQLite paths) pass unchanged."""
    url = "postgresql+psycopg://bot@db:5432/runbook"
    assert Options(ledger_url=url).ledger_url == url
    assert Options(ledger_url="sqlite:////tmp/x.db").ledger_url == "sqlite:////tmp/x.db"
