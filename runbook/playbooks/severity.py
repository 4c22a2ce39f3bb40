"""Assess severity: what kind of problem the evidence shows, and which level the policy gives it.

The runbook's examples become categories (``outage``, ``data_breach``, ``authentication_failure`` ->
P0; ``edge_function_failure``, ``database_degradation``, ``partial_outage`` -> P1;
``elevated_error_rate``, ``feature_down`` -> P2; ``warning_threshold``, ``minor_performance`` -> P3),
and the policy's ``classification`` table maps each category to a level. The most severe wins; every
category found is kept as a reason, so the timeline says why.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from pydantic import BaseModel, Field

from runbook.models import Severity
from runbook.policy import Policy

_BREACH = re.compile(
    r"\b(breach|exfiltrat\w*|leak(ed)?|unauthori[sz]ed access|security incident)\b", re.I
)
_AUTH = re.compile(r"\b(auth(entication)?|login|jwt|sign[- ]?in)\b", re.I)


class HealthFindings(BaseModel):
    """What the detect phase's health checks saw (None: not checked / not configured)."""

    app_ok: bool | None = None
    app_status: int | None = None
    rest_ok: bool | None = None
    auth_ok: bool | None = None
    unhealthy_services: list[str] = Field(default_factory=list)


class ThresholdFinding(BaseModel):
    metric: str
    value: float
    level: str  # ok | warning | alert


class Assessment(BaseModel):
    severity: Severity
    categories: list[str]
    reasons: list[str]


def categorize(
    health: HealthFindings,
    thresholds: Iterable[ThresholdFinding] = (),
    text: str = "",
    labels: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Categories the evidence supports, each with the reason a person would read."""
    found: dict[str, str] = {}
    if health.app_ok is False and health.rest_ok is False:
        found["outage"] = "the app's health check and the database REST API both fail"
    elif health.app_ok is False:
        if health.app_status is None or health.app_status >= 500:
            found["partial_outage"] = (
                f"the app's health check fails ({health.app_status or 'no answer'})"
            )
    if health.auth_ok is False:
        found["authentication_failure"] = "Supabase auth health fails"
    if "auth" in health.unhealthy_services and "authentication_failure" not in found:
        found["authentication_failure"] = "Supabase reports the auth service unhealthy"
    if "db" in health.unhealthy_services:
        found["database_degradation"] = "Supabase reports the database unhealthy"
    all_text = " ".join([text, *(labels or {}).values()])
    if _BREACH.search(all_text):
        found["data_breach"] = "the alert mentions a possible data breach"
    if _AUTH.search(all_text) and re.search(r"fail|error|invalid|denied|down", all_text, re.I):
        found.setdefault("authentication_failure", "the alert reports authentication failures")
    for t in thresholds:
        if t.level == "alert":
            cat = {
                "error_rate": "elevated_error_rate",
                "p95_latency": "minor_performance",
                "availability": "partial_outage",
                "db_connections": "database_degradation",
                "edge_function_success": "edge_function_failure",
            }.get(t.metric, "warning_threshold")
            found.setdefault(cat, f"{t.metric} at {t.value:g} is past its alert threshold")
        elif t.level == "warning":
            found.setdefault("warning_threshold", f"{t.metric} at {t.value:g} is past its target")
    return found


def assess(
    policy: Policy,
    health: HealthFindings,
    thresholds: Iterable[ThresholdFinding] = (),
    *,
    text: str = "",
    labels: Mapping[str, str] | None = None,
    hint: Severity | None = None,
) -> Assessment:
    """The severity the policy gives the evidence; the sender's hint counts only when it is higher.

    With no evidence at all the hint stands, or P3 ("monitoring alert") without one.
    """
    found = categorize(health, thresholds, text, labels)
    levels = [(policy.classification.get(cat, Severity.P3), cat) for cat in found]
    reasons = [
        f"{cat} -> {policy.classification.get(cat, Severity.P3).value}: {why}"
        for cat, why in found.items()
    ]
    severity = min((lvl for lvl, _ in levels), key=lambda s: s.rank, default=None)
    if hint is not None and (severity is None or hint.is_higher_than(severity)):
        reasons.append(f"the alert's own severity {hint.value} is higher than the evidence shows")
        severity = hint
    if severity is None:
        severity = Severity.P3
        reasons.append("no failing check or crossed threshold: a monitoring alert")
    return Assessment(severity=severity, categories=sorted(found), reasons=reasons)
