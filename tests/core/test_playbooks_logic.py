"""Severity assessment, diagnosis and SLA decisions: pure functions over evidence and the policy."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from runbook.models import Incident, IncidentStatus, Severity
from runbook.playbooks.diagnosis import TriageFindings, diagnose
from runbook.playbooks.severity import HealthFindings, ThresholdFinding, assess
from runbook.policy import SeverityAction, load_policy
from runbook.sla import added_actions, check_overrun, on_severity_change

POL = load_policy()
T0 = datetime(2026, 3, 1, 3, 0, tzinfo=UTC)


def test_outage_is_p0() -> None:
    """App and database REST both down is a complete outage: P0."""
    a = assess(POL, HealthFindings(app_ok=False, app_status=503, rest_ok=False))
    assert a.severity is Severity.P0 and "outage" in a.categories


def test_auth_failure_is_p0() -> None:
    """A failing auth health check is an authentication failure: P0."""
    a = assess(POL, HealthFindings(app_ok=True, auth_ok=False))
    assert a.severity is Severity.P0 and a.categories == ["authentication_failure"]


def test_data_breach_from_alert_text() -> None:
    """An alert that mentions a data breach is P0 whatever the health checks say."""
    a = assess(POL, HealthFindings(app_ok=True), text="Possible data breach: unusual export volume")
    assert a.severity is Severity.P0 and "data_breach" in a.categories


def test_edge_function_failures_are_p1() -> None:
    """Edge-function success under its alert threshold is P1."""
    t = [ThresholdFinding(metric="edge_function_success", value=90, level="alert")]
    assert assess(POL, HealthFindings(app_ok=True), t).severity is Severity.P1


def test_elevated_error_rate_is_p2_and_warning_p3() -> None:
    """An error rate past 1 % is P2; a metric past its target only is P3."""
    err = [ThresholdFinding(metric="error_rate", value=3.0, level="alert")]
    warn = [ThresholdFinding(metric="p95_latency", value=700, level="warning")]
    assert assess(POL, HealthFindings(app_ok=True), err).severity is Severity.P2
    assert assess(POL, HealthFindings(app_ok=True), warn).severity is Severity.P3


def test_hint_counts_only_when_higher() -> None:
    """The sender's severity raises the level but never lowers what the evidence shows."""
    err = [ThresholdFinding(metric="error_rate", value=3.0, level="alert")]
    assert assess(POL, HealthFindings(), err, hint=Severity.P0).severity is Severity.P0
    assert assess(POL, HealthFindings(auth_ok=False), hint=Severity.P3).severity is Severity.P0
    none = assess(POL, HealthFindings())
    assert none.severity is Severity.P3 and none.reasons


def test_bad_deploy_ranks_first_after_a_recent_deploy() -> None:
    """High errors right after a production deployment point at the deployment."""
    d = diagnose(
        TriageFindings(
            detected_at=T0,
            error_rate_pct=8.0,
            last_deploy_at=T0 - timedelta(minutes=4),
            last_deploy_id="dpl_9",
        )
    )
    assert d.top is not None and d.top.scenario == "bad-deploy"
    assert any("dpl_9" in e.note for e in d.top.evidence)


def test_errors_without_a_deploy_rank_high_error_rate() -> None:
    """High errors with no deployment in the last hour point at a high error rate, not a deploy."""
    d = diagnose(
        TriageFindings(detected_at=T0, error_rate_pct=3.0, last_deploy_at=T0 - timedelta(days=1))
    )
    assert d.top is not None and d.top.scenario == "high-error-rate"
    assert [h.scenario for h in d.hypotheses if h.scenario == "bad-deploy"][0]
    assert next(h for h in d.hypotheses if h.scenario == "bad-deploy").score == 0


def test_db_and_edge_and_auth_evidence() -> None:
    """Each scenario's own evidence puts it first."""
    db = diagnose(TriageFindings(detected_at=T0, long_running_queries=4, db_latency_ms=2500))
    edge = diagnose(TriageFindings(detected_at=T0, function_timeouts={"transcribe": 40}))
    auth = diagnose(TriageFindings(detected_at=T0, auth_ok=False, auth_rate_limited=120))
    assert db.top and db.top.scenario == "db-degradation"
    assert edge.top and edge.top.scenario == "edge-timeouts"
    assert auth.top and auth.top.scenario == "auth-failure"


def _incident(sev: Severity, detected: datetime, level: int = 0) -> Incident:
    return Incident(
        id=1,
        dedup_key="k",
        title="t",
        severity=sev,
        status=IncidentStatus.MITIGATING,
        detected_at=detected,
        escalation_level=level,
    )


def test_overrun_escalates_past_twice_the_estimate() -> None:
    """A P1 (estimate 4 h) open for more than 8 h escalates to the first level; under it does not."""
    inc = _incident(Severity.P1, T0)
    assert check_overrun(POL, inc, T0 + timedelta(hours=8)) is None
    esc = check_overrun(POL, inc, T0 + timedelta(hours=8, minutes=1))
    assert esc is not None and esc.role == "Engineering Lead" and esc.kind == "resolution_overrun"


def test_rising_severity_adds_page_and_war_room() -> None:
    """A P2 that becomes P0 escalates and newly requires paging and a war room."""
    esc, actions = on_severity_change(POL, _incident(Severity.P2, T0, level=1), Severity.P0)
    assert esc is not None and esc.level == 2 and esc.role == "DevOps/SRE"
    assert SeverityAction.PAGE_ONCALL in actions and SeverityAction.WAR_ROOM in actions
    assert on_severity_change(POL, _incident(Severity.P0, T0), Severity.P2) == (None, [])
    assert added_actions(POL, Severity.P1, Severity.P1) == []


def test_slow_queries_piling_up_point_at_the_database_before_any_is_long_running() -> None:
    """An alert that fires before any query is 5 min old: errors with no deploy, p95 high, and
    several queries active for over a second (the runbook's "slow query responses (>1s)") rank
    db-degradation first; one slow query (a report someone runs) does not outweigh the errors; a
    query that is both slow and long-running counts once."""
    base = dict(
        detected_at=T0,
        error_rate_pct=4.0,
        p95_ms=2500,
        last_deploy_at=T0 - timedelta(days=1),
    )
    pileup = diagnose(TriageFindings(**base, slow_queries=5, slowest_query_s=42))
    assert pileup.top is not None and pileup.top.scenario == "db-degradation"
    slow = next(e for e in pileup.top.evidence if e.signal == "slow_queries")
    assert slow.note == "5 queries active for over a second (the slowest 42 s)"

    one = diagnose(TriageFindings(**base, slow_queries=1, slowest_query_s=3))
    assert one.top is not None and one.top.scenario == "high-error-rate"
    db = next(h for h in one.hypotheses if h.scenario == "db-degradation")
    assert [e.note for e in db.evidence if e.signal == "slow_queries"] == [
        "1 query active for over a second (the slowest 3 s)"
    ]

    both = diagnose(TriageFindings(**base, long_running_queries=2, slow_queries=5))
    db = next(h for h in both.hypotheses if h.scenario == "db-degradation")
    assert [e.signal for e in db.evidence] == ["long_queries", "p95"]
