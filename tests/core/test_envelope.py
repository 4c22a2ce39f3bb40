"""The safety envelope's verdict: rate limit per action and target, circuit breaker per incident."""

from __future__ import annotations

from runbook.actions import envelope_verdict
from runbook.models import Action, ActionStatus


def _applied(incident_id: int) -> Action:
    return Action(
        incident_id=incident_id,
        idempotency_key=f"INC-{incident_id}:rollback",
        kind="rollback_deployment",
        target="prj",
        status=ActionStatus.APPLIED,
    )


def test_goes_ahead_with_no_history() -> None:
    """No recent application and no failure: go ahead."""
    assert (
        envelope_verdict(recent_applied=[], failures=0, max_failures=2, min_interval_text="30m")
        is None
    )


def test_rate_limit_names_the_earlier_incident() -> None:
    """A rollback of the same project within the interval is held back, naming where it ran."""
    verdict = envelope_verdict(
        recent_applied=[_applied(7)], failures=0, max_failures=2, min_interval_text="30m"
    )
    assert verdict is not None and "INC-7" in verdict and "30m" in verdict


def test_circuit_breaker_opens_at_the_limit() -> None:
    """Two failed applications hand the incident to a person instead of trying again."""
    assert (
        envelope_verdict(recent_applied=[], failures=1, max_failures=2, min_interval_text="30m")
        is None
    )
    verdict = envelope_verdict(
        recent_applied=[], failures=2, max_failures=2, min_interval_text="30m"
    )
    assert verdict is not None and "circuit breaker" in verdict
