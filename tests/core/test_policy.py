"""The policy: the runbook's values as defaults, overrides validated with the path of the field."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from runbook.errors import PolicyError
from runbook.models import Phase, Severity
from runbook.policy import (
    SeverityAction,
    build_policy,
    format_duration,
    load_policy,
    parse_duration,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_defaults_are_the_runbooks_values() -> None:
    """Response times, phase windows and thresholds equal what RUNBOOK.md states."""
    pol = load_policy()
    assert [pol.severities[s].response_time for s in Severity] == [
        timedelta(minutes=5),
        timedelta(minutes=15),
        timedelta(hours=1),
        timedelta(hours=4),
    ]
    assert pol.phases[Phase.DETECT].end == timedelta(minutes=5)
    assert pol.phases[Phase.TRIAGE].end == timedelta(minutes=15)
    assert pol.phases[Phase.MITIGATE].end == timedelta(minutes=60)
    assert pol.phases[Phase.RCA].end == timedelta(hours=4)
    assert pol.phases[Phase.COMMUNICATE].end is None
    t = pol.thresholds
    assert (t["error_rate"].target, t["error_rate"].alert) == (0.1, 1.0)
    assert (t["p95_latency"].target, t["p95_latency"].alert) == (500, 1000)
    assert (t["availability"].target, t["availability"].alert) == (99.9, 99.0)
    assert (t["db_connections"].target, t["db_connections"].alert) == (80, 90)
    assert (t["edge_function_success"].target, t["edge_function_success"].alert) == (99, 95)
    assert [lvl.role for lvl in pol.escalation.chain] == [
        "Engineering Lead",
        "DevOps/SRE",
        "Security Team",
        "Executive On-Call",
    ]
    assert [r.after for r in pol.reviews] == [
        timedelta(hours=24),
        timedelta(hours=48),
        timedelta(weeks=1),
    ]
    assert pol.routing.pagerduty == [Severity.P0, Severity.P1]
    assert pol.routing.slack == list(Severity)


def test_required_actions_per_severity() -> None:
    """P0 pages and opens a war room, P1 alerts engineering, P2 tickets, P3 goes to the backlog."""
    pol = load_policy()
    assert pol.requires(Severity.P0, SeverityAction.PAGE_ONCALL)
    assert pol.requires(Severity.P0, SeverityAction.WAR_ROOM)
    assert pol.requires(Severity.P1, SeverityAction.ALERT_ENGINEERING)
    assert not pol.requires(Severity.P1, SeverityAction.WAR_ROOM)
    assert pol.requires(Severity.P2, SeverityAction.CREATE_TICKET)
    assert pol.requires(Severity.P3, SeverityAction.BACKLOG)
    assert pol.pages(Severity.P1) and not pol.pages(Severity.P2)


def test_deadlines_scale_with_severity() -> None:
    """Triage's deadline equals the severity's response time for P1, P2 and P3."""
    pol = load_policy()
    for sev in (Severity.P1, Severity.P2, Severity.P3):
        assert pol.deadline(Phase.TRIAGE, sev, T0) == T0 + pol.severities[sev].response_time
    assert pol.deadline(Phase.DETECT, Severity.P0, T0) == T0 + timedelta(minutes=5)
    assert pol.deadline(Phase.COMMUNICATE, Severity.P0, T0) is None
    assert Phase.COMMUNICATE not in pol.deadlines(Severity.P0, T0)


def test_resolution_overrun_is_twice_the_estimate() -> None:
    """Escalation fires only past 2x the estimated resolution time."""
    pol = load_policy()
    est = pol.severities[Severity.P1].estimated_resolution
    assert not pol.resolution_overrun(Severity.P1, est * 2)
    assert pol.resolution_overrun(Severity.P1, est * 2 + timedelta(seconds=1))


def test_threshold_levels() -> None:
    """Values past target are warnings, at or past alert are alerts, for both directions."""
    t = load_policy().thresholds
    assert t["error_rate"].level(0.05) == "ok"
    assert t["error_rate"].level(0.5) == "warning"
    assert t["error_rate"].level(1.0) == "alert"
    assert t["availability"].level(99.95) == "ok"
    assert t["availability"].level(99.5) == "warning"
    assert t["availability"].level(98.0) == "alert"


def test_escalation_chain_saturates_at_the_last_level() -> None:
    """Escalating past the end of the chain stays at its last contact."""
    pol = load_policy()
    assert pol.escalation_level(0).role == "Engineering Lead"
    assert pol.escalation_level(99).role == "Executive On-Call"


def test_action_modes() -> None:
    """A rollback is automatic at P0 and never at P3; unknown actions need approval."""
    pol = load_policy()
    assert pol.action_mode("rollback_deployment", Severity.P0) == "auto"
    assert pol.action_mode("rollback_deployment", Severity.P3) == "never"
    assert pol.action_mode("drop_database", Severity.P0) == "approve"


@pytest.mark.parametrize(
    ("override", "path"),
    [
        ({"severities": {"P1": {"response_time": "soon"}}}, "severities.P1.response_time"),
        ({"severities": {"P1": {"window_scale": 0}}}, "severities.P1.window_scale"),
        ({"severities": {"P1": {"typo": 1}}}, "severities.P1.typo"),
        ({"thresholds": {"error_rate": {"alert": 0.01}}}, "thresholds.error_rate"),
        ({"routing": {"slack": ["P9"]}}, "routing.slack.0"),
        ({"phases": {"triage": {"end": "1m"}}}, "phases.triage"),
        (
            {"actions": {"rollback_deployment": {"P0": "sometimes"}}},
            "actions.rollback_deployment.P0",
        ),
        ({"escalation": {"chain": []}}, "escalation.chain"),
        ({"recovery": {"max_relaunches": -1}}, "recovery.max_relaunches"),
        ({"recovery": {"max_relaunches": 11}}, "recovery.max_relaunches"),
        ({"recovery": {"max_relaunch": 2}}, "recovery.max_relaunch"),
    ],
)
def test_wrong_values_name_their_field(override: dict, path: str) -> None:
    """Each wrong value is rejected with the dotted path of its field in the message."""
    with pytest.raises(PolicyError) as info:
        build_policy(override)
    assert info.value.path == path
    assert path in str(info.value)


def test_override_file_merges_over_defaults(tmp_path) -> None:
    """A TOML or YAML file changes only what it names."""
    toml = tmp_path / "policy.toml"
    toml.write_text('[severities.P1]\nresponse_time = "10m"\n')
    pol = load_policy(toml)
    assert pol.severities[Severity.P1].response_time == timedelta(minutes=10)
    assert pol.severities[Severity.P1].name == "High"
    yml = tmp_path / "policy.yaml"
    yml.write_text("thresholds:\n  error_rate:\n    alert: 2.0\n")
    assert load_policy(yml).thresholds["error_rate"].alert == 2.0


def test_the_relaunch_limit_is_three_unless_the_policy_says(tmp_path) -> None:
    """A run that crashed is launched again up to 3 times by default; a policy file changes it (0:
    never)."""
    assert load_policy().recovery.max_relaunches == 3
    f = tmp_path / "p.toml"
    f.write_text("[recovery]\nmax_relaunches = 0\n")
    assert load_policy(f).recovery.max_relaunches == 0


def test_env_names_the_policy_file(tmp_path, monkeypatch) -> None:
    """RUNBOOK_POLICY points load_policy at a file when no path is given."""
    f = tmp_path / "p.toml"
    f.write_text('[monitoring]\nrecurrence_watch = "30m"\n')
    monkeypatch.setenv("RUNBOOK_POLICY", str(f))
    assert load_policy().monitoring.recurrence_watch == timedelta(minutes=30)


def test_unreadable_or_unparseable_files(tmp_path) -> None:
    """A missing file or a syntax error is a PolicyError naming the file."""
    with pytest.raises(PolicyError, match="cannot read policy file"):
        load_policy(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[severities\n")
    with pytest.raises(PolicyError, match="bad.toml is not valid toml"):
        load_policy(bad)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("5m", 300), ("1h30m", 5400), ("1d", 86400), ("1w", 604800), (30, 30)],
)
def test_parse_duration(text, seconds) -> None:
    """Durations parse from the policy's notation and render back the same way."""
    td = parse_duration(text)
    assert td.total_seconds() == seconds
    assert parse_duration(format_duration(td)) == td


@pytest.mark.parametrize("text", ["soon", "", "5x", "m5", -3, "5m garbage"])
def test_parse_duration_rejects(text) -> None:
    """Anything else is refused with an example of the notation."""
    with pytest.raises(ValueError, match="90s|negative"):
        parse_duration(text)
