"""`runbook drill`: the alert path, the policy overlay, bad input, and one whole drill end to end."""

from __future__ import annotations

import json
import tomllib
from datetime import timedelta
from importlib import resources
from pathlib import Path

import pytest
from typer.testing import CliRunner

from runbook.cli import app
from runbook.clock import utcnow
from runbook.drill.alerting import Observation, alertmanager_notification
from runbook.drill.run import DRILL_SCENARIOS, alert_lead_s, drill_policy_text
from runbook.gateway.parsers.alertmanager import parse_document
from runbook.models import AlertStatus, Severity
from runbook.playbooks.severity import ThresholdFinding
from runbook.policy import load_policy

runner = CliRunner()


def _observation(*findings: tuple[str, float, str]) -> Observation:
    return Observation(
        at=utcnow(),
        window_s=1.0,
        findings=[ThresholdFinding(metric=m, value=v, level=lvl) for m, v, lvl in findings],
    )


def test_firing_findings_become_one_alertmanager_group_the_gateway_parses() -> None:
    """Every firing metric is one alert of one group (one incident); ok/warning ones are left out;
    the gateway's own parser reads it with the threshold's severity as the hint."""
    policy = load_policy(None)
    obs = _observation(
        ("error_rate", 8.0, "alert"),
        ("availability", 92.0, "alert"),
        ("p95_latency", 900, "warning"),
    )
    body = alertmanager_notification(policy, obs, "web", utcnow() - timedelta(seconds=5))
    alerts = parse_document(body, "alertmanager")
    assert [a.labels["alertname"] for a in alerts] == ["HighErrorRate", "LowAvailability"]
    assert len({a.dedup_key for a in alerts}) == 1
    assert {a.status for a in alerts} == {AlertStatus.FIRING}
    hints = {a.labels["alertname"]: a.severity_hint for a in alerts}
    assert hints == {"HighErrorRate": Severity.P2, "LowAvailability": Severity.P1}
    assert "8.00 %" in alerts[0].summary and "above 1 %" in alerts[0].summary


def test_nothing_firing_is_not_a_notification() -> None:
    """Alertmanager never sends an empty notification; neither does the drill."""
    with pytest.raises(ValueError, match="nothing to notify"):
        alertmanager_notification(
            load_policy(None), _observation(("error_rate", 0.1, "ok")), "web", utcnow()
        )


def test_drill_policy_runs_approvals_automatically_and_keeps_never(tmp_path: Path) -> None:
    """The overlay turns every 'approve' into 'auto' (nobody answers in a drill) and nothing else:
    'never' stays never, and the result is a valid policy."""
    default = resources.files("runbook").joinpath("default_policy.toml").read_text("utf-8")
    actions = tomllib.loads(default)["actions"]
    path = tmp_path / "policy.toml"
    path.write_text(drill_policy_text(actions))
    policy = load_policy(path)
    for name, modes in actions.items():
        for sev in ("P0", "P1", "P2", "P3"):
            got = policy.actions[name].mode(Severity(sev))
            want = "auto" if modes[sev] == "approve" else modes[sev]
            assert got == want, (name, sev)


def test_the_db_fault_lasts_the_long_query_threshold_before_its_alert() -> None:
    """db-degradation's alert may fire only once its slow query is long-running by the target
    block's default threshold (300 s: 3 s at 100x, 300 s at 1x), so triage and the DB playbook see
    it; the other scenarios alert as soon as their rule fires."""
    from blocks.postgres import PostgresTarget

    threshold = PostgresTarget.model_fields["long_query_threshold_s"].default
    assert threshold == 300
    assert alert_lead_s("db-degradation", 100) == 3.0
    assert alert_lead_s("db-degradation", 1) == 300.0
    others = [s for s in DRILL_SCENARIOS if s != "db-degradation"]
    assert others and all(alert_lead_s(s, 100) == 0.0 for s in others)


def test_unknown_scenario_lists_the_known_ones_and_exits_2(tmp_path, monkeypatch) -> None:
    """A typo in --scenario names every known scenario, exits 2, and creates nothing."""
    monkeypatch.setenv("RUNBOOK_HOME", str(tmp_path))
    result = runner.invoke(app, ["drill", "--scenario", "bad-deploi"])
    assert result.exit_code == 2
    for name in DRILL_SCENARIOS:
        assert name in result.output
    assert list(tmp_path.iterdir()) == []


def test_db_scenario_without_postgres_says_how_to_point_at_one(tmp_path, monkeypatch) -> None:
    """No PostgreSQL for db-degradation: exit 2 with the option to use, no password echoed, nothing
    created."""
    monkeypatch.setenv("RUNBOOK_HOME", str(tmp_path))
    dsn = "postgresql://someone:s3cr3t-pw@127.0.0.1:1/nodb"
    result = runner.invoke(app, ["drill", "--scenario", "db-degradation", "--database-url", dsn])
    assert result.exit_code == 2
    assert "--database-url" in result.output
    assert "s3cr3t-pw" not in result.output
    assert list(tmp_path.iterdir()) == []


def test_bad_speed_is_refused_with_the_option_name(tmp_path, monkeypatch) -> None:
    """--speed 0 is refused naming the option, before anything starts."""
    monkeypatch.setenv("RUNBOOK_HOME", str(tmp_path))
    result = runner.invoke(app, ["drill", "--speed", "0"])
    assert result.exit_code == 2
    assert "--speed" in result.output


@pytest.mark.timeout(240)
def test_bad_deploy_drill_end_to_end(prefect_api, tmp_path, monkeypatch) -> None:
    """The default drill: the alert goes through the gateway, the incident is mitigated (one rollback)
    and verified, exit 0, and the JSON report has every field the issue lists."""
    monkeypatch.setenv("RUNBOOK_HOME", str(tmp_path / "home"))
    report_path = tmp_path / "drill.json"
    result = runner.invoke(app, ["drill", "--json", str(report_path)])
    assert result.exit_code == 0, result.output
    report = json.loads(report_path.read_text())
    for key in (
        "scenario",
        "incident_id",
        "severity",
        "mitigated",
        "verified",
        "phases",
        "actions",
        "notifications",
        "reminders",
        "rca_path",
        "time_to_mitigate_s",
        "alert_to_first_action_s",
    ):
        assert key in report, key
    assert report["scenario"] == "bad-deploy"
    assert report["mitigated"] is True and report["verified"] is True
    assert [p["name"] for p in report["phases"]] == [
        "detect",
        "triage",
        "mitigate",
        "communicate",
        "rca",
    ]
    for p in report["phases"]:
        assert set(p) >= {"started_at", "ended_at", "duration_s", "sla_s", "breached", "state"}
        assert p["state"] in ("done", "breached")
    rollbacks = [a for a in report["actions"] if a["kind"] == "rollback_deployment"]
    assert len(rollbacks) == 1 and rollbacks[0]["status"] == "applied"
    assert len({a["idempotency_key"] for a in report["actions"]}) == len(report["actions"])
    channels = {n["channel"]: n["count"] for n in report["notifications"]}
    assert channels["slack"] >= 1 and channels["pagerduty"] >= 1
    assert Path(report["rca_path"]).is_file()
    assert 0 < report["alert_to_first_action_s"] < report["time_to_mitigate_s"] + 5


@pytest.mark.timeout(240)
def test_auth_failure_drill_raises_the_rate_limits_and_is_verified(
    prefect_api, tmp_path, monkeypatch
) -> None:
    """The auth-failure drill: triage reads the auth logs since the fault began (wall time, as the
    logs are stamped), sees the 429s dominate, and the mitigation raises the auth rate limits; the
    incident is mitigated and verified, exit 0. (It used to hinge on one or two log rows.)"""
    monkeypatch.setenv("RUNBOOK_HOME", str(tmp_path / "home"))
    report_path = tmp_path / "drill.json"
    result = runner.invoke(app, ["drill", "--scenario", "auth-failure", "--json", str(report_path)])
    assert result.exit_code == 0, result.output
    report = json.loads(report_path.read_text())
    assert report["mitigated"] is True and report["verified"] is True
    raised = [a for a in report["actions"] if a["kind"] == "raise_auth_rate_limits"]
    assert len(raised) == 1 and raised[0]["status"] == "applied"
