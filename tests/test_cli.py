"""The `runbook` command: help, policy, incidents, and clear one-line errors on bad input."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from runbook.cli import app
from runbook.ledger import open_ledger
from runbook.models import Alert, Severity

runner = CliRunner()


@pytest.fixture
def ledger_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'ledger.db'}"


def test_help_lists_every_command() -> None:
    """`runbook --help` names every command."""
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for name in ("policy", "sandbox", "incidents", "incident", "drill", "serve", "db", "bench"):
        assert name in result.output


def test_policy_show_prints_the_runbook_values() -> None:
    """`runbook policy show` prints severities, thresholds and the escalation chain."""
    result = runner.invoke(app, ["policy", "show"])
    assert result.exit_code == 0, result.output
    assert "Critical" in result.output
    assert "Engineering Lead" in result.output
    assert "error_rate" in result.output


def test_policy_show_json() -> None:
    """`runbook policy show --json` is machine-readable and complete."""
    result = runner.invoke(app, ["policy", "show", "--json"])
    data = json.loads(result.stdout)
    assert set(data["severities"]) == {"P0", "P1", "P2", "P3"}


def test_bad_policy_exits_2_naming_the_field(tmp_path) -> None:
    """A policy file with a wrong value exits 2 and names the field."""
    f = tmp_path / "p.toml"
    f.write_text('[severities.P1]\nresponse_time = "soon"\n')
    for args in (["policy", "check", str(f)], ["policy", "show", "--policy", str(f)]):
        result = runner.invoke(app, args)
        assert result.exit_code == 2
        assert "severities.P1.response_time" in result.output


def test_unreachable_ledger_is_one_line() -> None:
    """An unreachable ledger URL gives one line naming host and port, not a traceback."""
    url = "postgresql+psycopg://bot:hunter2@127.0.0.1:1/runbook"
    result = runner.invoke(app, ["incidents", "--ledger", url])
    assert result.exit_code == 1
    assert "127.0.0.1:1" in result.output
    assert "hunter2" not in result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_incidents_and_show(ledger_url) -> None:
    """An incident recorded in the ledger is listed and shown, as a table and as JSON."""
    with open_ledger(ledger_url) as led:
        out = led.record_alert(
            Alert(source="generic", delivery_id="d1", dedup_key="k1", summary="db slow"),
            title="Database slow",
            severity=Severity.P1,
        )
    key = f"INC-{out.incident_id}"
    listed = runner.invoke(app, ["incidents", "--ledger", ledger_url])
    assert listed.exit_code == 0 and key in listed.output
    as_json = json.loads(
        runner.invoke(app, ["incidents", "--open", "--json", "--ledger", ledger_url]).stdout
    )
    assert [row["key"] for row in as_json] == [key]
    shown = runner.invoke(app, ["incident", "show", key, "--ledger", ledger_url])
    assert shown.exit_code == 0 and "Database slow" in shown.output
    detail = json.loads(
        runner.invoke(app, ["incident", "show", key, "--json", "--ledger", ledger_url]).stdout
    )
    assert detail["incident"]["severity"] == "P1"
    assert detail["alerts"][0]["summary"] == "db slow"


def test_show_unknown_or_malformed_incident(ledger_url) -> None:
    """An unknown incident says so (exit 1); a malformed reference is a usage error (exit 2)."""
    missing = runner.invoke(app, ["incident", "show", "INC-999", "--ledger", ledger_url])
    assert missing.exit_code == 1 and "INC-999" in missing.output
    bad = runner.invoke(app, ["incident", "show", "yesterday", "--ledger", ledger_url])
    assert bad.exit_code == 2 and "INC-<number>" in bad.output


def test_sandbox_rejects_unknown_scenario() -> None:
    """`runbook sandbox --scenario nope` lists the known scenarios and exits 2."""
    result = runner.invoke(app, ["sandbox", "--scenario", "nope"])
    assert result.exit_code == 2
    assert "bad-deploy" in result.output
