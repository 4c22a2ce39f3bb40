"""The threshold watcher's decisions (runbook.watching): alerts to fire, healthy windows, resolving."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from runbook.ledger import open_ledger
from runbook.metrics import Readings
from runbook.models import Alert, AlertStatus, IncidentStatus, Severity, TimelineEvent
from runbook.policy import build_policy
from runbook.watching import (
    BLIND_EVENT,
    HEALTHY_EVENT,
    SOURCE_METRIC,
    WatchState,
    check_service,
    decide,
    firing_intakes,
    incident_dedup_key,
    observe,
    path_to_resolved,
    resolved_alerts,
    source_dedup_key,
    unreachable,
    watch_state,
)

T0 = datetime(2026, 11, 26, 3, 0, tzinfo=UTC)
POLICY = build_policy(None)
WINDOW = timedelta(minutes=15)


def _readings(error_rate: float | None = 0.0005, **kw: float | None) -> Readings:
    values: dict[str, object] = {
        "window_start": T0 - timedelta(seconds=30),
        "window_end": T0,
        "requests": 15000.0,
        "error_rate": error_rate,
        "availability": None if error_rate is None else 1 - error_rate,
        "p95_ms": 180.0,
        "db_connection_ratio": 0.2,
        "edge_function_success": 0.999,
    }
    return Readings.model_validate(values | kw)


def _at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def _firing(metric: str, minutes: float) -> Alert:
    obs = observe(POLICY, "web", _readings(0.03), _at(minutes))
    return next(i.alert for i in firing_intakes(POLICY, obs) if i.alert.labels["metric"] == metric)


def _event(kind: str, minutes: float, **data: str) -> TimelineEvent:
    return TimelineEvent(incident_id=1, at=_at(minutes), kind=kind, message="", data=data)


def test_breached_metrics_become_one_alert_each_under_the_service_key() -> None:
    """3 % errors breach error_rate (P2) and availability (P1): one alert per metric, all with the
    service's dedup key, the most severe first (it opens the incident), each with its own
    fingerprint, the threshold's severity and its value against the threshold in the summary."""
    obs = observe(POLICY, "web", _readings(0.03), T0)
    intakes = firing_intakes(POLICY, obs)

    assert [i.alert.labels["metric"] for i in intakes] == ["availability", "error_rate"]
    assert {i.alert.dedup_key for i in intakes} == {incident_dedup_key("web")} == {"watch:web"}
    assert len({i.alert.fingerprint for i in intakes}) == 2
    assert [i.alert.severity_hint for i in intakes] == [Severity.P1, Severity.P2]
    assert all(i.severity == Severity.P1 and i.alert.source == "watch" for i in intakes)
    error = intakes[1].alert
    assert "error_rate 3.00 %" in error.summary and "1 %" in error.summary
    assert error.labels["alertname"] == "HighErrorRate" and error.labels["service"] == "web"
    assert error.status == AlertStatus.FIRING and error.received_at == T0
    assert "error_rate" in intakes[0].title and "availability" in intakes[0].title


def test_healthy_readings_fire_nothing() -> None:
    """Readings inside every threshold (and a warning-only error rate) record no alert."""
    assert firing_intakes(POLICY, observe(POLICY, "web", _readings(0.0005), T0)) == []
    assert firing_intakes(POLICY, observe(POLICY, "web", _readings(0.005), T0)) == []


def test_each_run_is_a_new_delivery_and_a_retried_run_the_same() -> None:
    """Two runs at different times make distinct delivery ids (both attach); the same run retried
    makes the same ids (the ledger's redelivery check drops it)."""

    def ids(at: datetime) -> list[str]:
        obs = observe(POLICY, "web", _readings(0.03), at)
        return [i.alert.delivery_id for i in firing_intakes(POLICY, obs)]

    assert ids(T0) == ids(T0)
    assert not set(ids(T0)) & set(ids(_at(1)))


def test_unreachable_source_is_a_p3_alert_of_its_own_without_credentials() -> None:
    """An unreadable source fires one P3 alert under the service's monitoring-source key, and the
    password written into the metrics URL does not reach the alert."""
    obs = unreachable(
        "web", T0, "AppTransientError: GET https://bot:s3cret@metrics.example/metrics timed out"
    )
    [intake] = firing_intakes(POLICY, obs)

    assert intake.alert.dedup_key == source_dedup_key("web") != incident_dedup_key("web")
    assert intake.severity == Severity.P3 and intake.alert.severity_hint == Severity.P3
    assert intake.title == "Monitoring source unreachable: web metrics"
    assert "timed out" in intake.alert.summary
    assert "s3cret" not in intake.alert.model_dump_json() + intake.description
    assert obs.status_of("error_rate") == "unknown"
    assert obs.status_of(SOURCE_METRIC) == "breached"


def test_bad_service_names_are_refused_with_what_to_write() -> None:
    """A service name that cannot be part of a dedup key is refused, saying what a name looks like."""
    assert check_service("web-eu_1.prod") == "web-eu_1.prod"
    for bad in ("", "web app", "watch:web", "-web", "x" * 64):
        with pytest.raises(ValueError, match="letters, digits"):
            check_service(bad)


def test_state_reads_metrics_last_breach_and_streak_from_the_ledger() -> None:
    """The metrics are those of the firing watcher alerts; the last breach is the newest of them;
    a healthy marker after it starts the streak, one before it does not count."""
    alerts = [_firing("error_rate", 0), _firing("availability", 0), _firing("error_rate", 2)]
    other = alerts[0].model_copy(update={"source": "alertmanager", "labels": {"metric": "x"}})
    state = watch_state([*alerts, other], [_event(HEALTHY_EVENT, 1), _event(HEALTHY_EVENT, 3)])

    assert state.metrics == {"error_rate", "availability"}
    assert state.last_firing == _at(2)
    assert state.healthy_since == _at(3)
    assert watch_state(alerts, [_event(HEALTHY_EVENT, 1)]).healthy_since is None


def test_blind_runs_and_reopening_end_the_streak() -> None:
    """A "cannot tell" event or a reopening after the streak's start ends it; a later healthy marker
    starts a new one."""
    alerts = [_firing("error_rate", 0)]
    blind = watch_state(alerts, [_event(HEALTHY_EVENT, 1), _event(BLIND_EVENT, 5)])
    reopened = _event("status", 6, **{"from": "resolved", "to": "triaging"})
    again = watch_state(alerts, [_event(HEALTHY_EVENT, 1), reopened, _event(HEALTHY_EVENT, 7)])
    moved = _event("status", 6, **{"from": "detected", "to": "triaging"})

    assert blind.healthy_since is None
    assert again.healthy_since == _at(7)
    assert watch_state(alerts, [_event(HEALTHY_EVENT, 1), moved]).healthy_since == _at(1)


def test_decide_fires_starts_waits_and_resolves_after_the_window() -> None:
    """Breached -> firing; first healthy run -> start a streak (marker); healthy for less than
    the window -> wait; for the window -> resolve."""
    state = WatchState(metrics={"error_rate", "availability"}, last_firing=_at(0))
    bad = observe(POLICY, "web", _readings(0.03), _at(1))
    good = observe(POLICY, "web", _readings(0.0005), _at(1))

    assert decide(state, bad, _at(1), WINDOW).verdict == "firing"
    first = decide(state, good, _at(1), WINDOW)
    assert (first.verdict, first.mark, first.healthy_since) == ("healthy", HEALTHY_EVENT, _at(1))
    running = state.model_copy(update={"healthy_since": _at(1)})
    waiting = decide(running, good, _at(15.9), WINDOW)
    assert (waiting.verdict, waiting.mark) == ("healthy", None)
    done = decide(running, good, _at(16), WINDOW)
    assert done.verdict == "resolve" and "availability, error_rate" in done.reason


def test_decide_never_counts_not_knowing_as_healthy() -> None:
    """An unreachable source or missing data for a fired metric is "blind": no resolve, and a
    running streak is ended (marker) while no streak writes nothing."""
    state = WatchState(metrics={"error_rate"}, last_firing=_at(0), healthy_since=_at(1))
    down = unreachable("web", _at(30), "AppTransientError: connection refused")
    no_data = observe(POLICY, "web", _readings(error_rate=None, availability=None), _at(30))

    for obs in (down, no_data):
        decision = decide(state, obs, _at(30), WINDOW)
        assert (decision.verdict, decision.mark) == ("blind", BLIND_EVENT)
    idle = decide(state.model_copy(update={"healthy_since": None}), down, _at(30), WINDOW)
    assert (idle.verdict, idle.mark) == ("blind", None)
    assert "connection refused" in idle.reason


def test_the_source_incident_resolves_when_the_source_answers_again() -> None:
    """The monitoring-source incident's only metric is the source itself: healthy once it answers,
    resolved after the window; still firing while it is down."""
    state = WatchState(metrics={SOURCE_METRIC}, last_firing=_at(0), healthy_since=_at(1))
    answered = observe(POLICY, "web", _readings(0.03), _at(20))

    assert decide(state, answered, _at(20), WINDOW).verdict == "resolve"
    down = unreachable("web", _at(20), "timeout")
    assert decide(state, down, _at(20), WINDOW).verdict == "firing"


def test_resolve_follows_the_lifecycle() -> None:
    """Every open status resolves directly (TRANSITIONS); resolved needs nothing; closed and
    reviewed incidents are left alone."""
    for status in (IncidentStatus.DETECTED, IncidentStatus.MITIGATING, IncidentStatus.MONITORING):
        assert path_to_resolved(status) == [IncidentStatus.RESOLVED]
    assert path_to_resolved(IncidentStatus.RESOLVED) == []
    assert path_to_resolved(IncidentStatus.CLOSED) is None
    assert path_to_resolved(IncidentStatus.REVIEWED) is None


def test_through_the_ledger_one_incident_one_launch_then_attach_then_resolved(
    tmp_path: Path,
) -> None:
    """Recorded through Ledger.record_alerts (the gateway's path): the first run opens one P1
    incident with one launch row in the outbox, the second attaches to it, and the resolved
    alerts attach to it too."""
    ledger = open_ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    first = ledger.record_alerts(
        firing_intakes(POLICY, observe(POLICY, "web", _readings(0.03), T0))
    )
    second = ledger.record_alerts(
        firing_intakes(POLICY, observe(POLICY, "web", _readings(0.04), _at(1)))
    )
    incident_id = first[0].incident_id
    assert incident_id is not None

    assert [o.opened for o in first] == [True, False]
    assert all(o.attached and o.incident_id == incident_id for o in second)
    assert ledger.get_incident(incident_id).severity == Severity.P1
    assert ledger.outbox_stats()["pending"] == 1
    state = watch_state(ledger.alerts_for(incident_id), ledger.timeline(incident_id))
    assert state.metrics == {"error_rate", "availability"} and state.last_firing == _at(1)
    obs = observe(POLICY, "web", _readings(), _at(20))
    done = ledger.record_alerts(resolved_alerts(obs, "watch:web", state.metrics, "healthy"))
    assert all(o.attached and o.incident_id == incident_id for o in done)
    ledger.close()
