"""Compare monitoring readings with the policy's thresholds (the runbook's "Key Metrics to Monitor")."""

from __future__ import annotations

from runbook.metrics import Readings
from runbook.playbooks.severity import ThresholdFinding
from runbook.policy import Policy


def reading_values(readings: Readings) -> dict[str, float]:
    """The readings in the policy's units (percentages and milliseconds); missing ones left out."""
    pct = {
        "error_rate": readings.error_rate,
        "availability": readings.availability,
        "db_connections": readings.db_connection_ratio,
        "edge_function_success": readings.edge_function_success,
    }
    values = {k: v * 100 for k, v in pct.items() if v is not None}
    if readings.p95_ms is not None:
        values["p95_latency"] = readings.p95_ms
    return values


def evaluate(policy: Policy, readings: Readings) -> list[ThresholdFinding]:
    """One finding per metric the policy has a threshold for and the readings measured."""
    values = reading_values(readings)
    return [
        ThresholdFinding(metric=name, value=values[name], level=t.level(values[name]))
        for name, t in policy.thresholds.items()
        if name in values
    ]


def breached(findings: list[ThresholdFinding]) -> list[ThresholdFinding]:
    """Findings past their alert threshold."""
    return [f for f in findings if f.level == "alert"]


# the alert names a Prometheus rule file would use for each policy threshold
ALERT_NAMES = {
    "error_rate": "HighErrorRate",
    "p95_latency": "HighLatencyP95",
    "availability": "LowAvailability",
    "db_connections": "DatabaseConnectionsHigh",
    "edge_function_success": "EdgeFunctionFailures",
}


def alert_name(metric: str) -> str:
    """The alert's name for a policy metric (the metric itself when it has no usual name)."""
    return ALERT_NAMES.get(metric, metric)


def describe(policy: Policy, finding: ThresholdFinding) -> str:
    """``error_rate 3.00 % (alert at or above 1 %)``: the value against its alert threshold.

    Raises:
        KeyError: the policy has no threshold for the finding's metric.
    """
    t = policy.thresholds[finding.metric]
    side = "above" if t.worse == "above" else "below"
    return (
        f"{finding.metric} {finding.value:.2f} {t.unit} (alert at or {side} {t.alert:g} {t.unit})"
    )
