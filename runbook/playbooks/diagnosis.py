"""Form the hypothesis: rank the runbook's scenarios by the evidence triage gathered.

Scenarios: ``bad-deploy`` (errors rose right after a production deployment), ``high-error-rate``
(errors without a recent change), ``auth-failure``, ``db-degradation``, ``edge-timeouts``. Each gets a
score in [0, 1] from weighted evidence; the evidence list says what was seen, so a person can disagree.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from pydantic import BaseModel, Field

from runbook.models import Diagnosis, Evidence, Hypothesis

SCENARIOS = ("bad-deploy", "high-error-rate", "auth-failure", "db-degradation", "edge-timeouts")
RECENT_DEPLOY = timedelta(minutes=60)
#: this many queries slow at once is a pile-up (the degradation's signature), not one slow report
SLOW_PILEUP = 3


class TriageFindings(BaseModel):
    """Everything triage measured, as plain values (None: not measured)."""

    detected_at: datetime
    error_rate_pct: float | None = None
    p95_ms: float | None = None
    last_deploy_at: datetime | None = None
    last_deploy_id: str | None = None
    auth_ok: bool | None = None
    auth_errors: int = 0
    auth_rate_limited: int = 0
    db_ok: bool | None = None
    db_latency_ms: float | None = None
    long_running_queries: int = 0
    slow_queries: int = 0  # active for over a second (the runbook's symptom)
    slowest_query_s: float | None = None
    db_connection_pct: float | None = None
    function_timeouts: dict[str, int] = Field(default_factory=dict)
    function_success_pct: float | None = None
    error_types: dict[str, int] = Field(default_factory=dict)


def _h(scenario: str, evidence: list[Evidence]) -> Hypothesis:
    return Hypothesis(
        scenario=scenario,
        score=round(min(1.0, sum(e.weight for e in evidence)), 3),
        evidence=evidence,
    )


def diagnose(
    f: TriageFindings, *, error_alert_pct: float = 1.0, p95_alert_ms: float = 1000
) -> Diagnosis:
    """Rank the scenarios. Pure: same findings, same diagnosis."""
    errors_high = f.error_rate_pct is not None and f.error_rate_pct >= error_alert_pct
    deploy_recent = (
        f.last_deploy_at is not None
        and timedelta(0) <= f.detected_at - f.last_deploy_at <= RECENT_DEPLOY
    )

    bad_deploy: list[Evidence] = []
    if deploy_recent:
        age = (f.detected_at - f.last_deploy_at).total_seconds() / 60  # type: ignore[operator]
        bad_deploy.append(
            Evidence(
                signal="recent_deploy",
                value=f.last_deploy_id,
                weight=0.4,
                note=f"production deployment {f.last_deploy_id} went live {age:.0f} min before detection",
            )
        )
    if errors_high and deploy_recent:
        bad_deploy.append(
            Evidence(
                signal="error_rate",
                value=f.error_rate_pct,
                weight=0.5,
                note=f"error rate {f.error_rate_pct:.2f} % rose after that deployment",
            )
        )

    high_errors: list[Evidence] = []
    if errors_high:
        high_errors.append(
            Evidence(
                signal="error_rate",
                value=f.error_rate_pct,
                weight=0.5 if not deploy_recent else 0.2,
                note=f"error rate {f.error_rate_pct:.2f} % (alert at {error_alert_pct:g} %)",
            )
        )
        if not deploy_recent:
            high_errors.append(
                Evidence(
                    signal="no_recent_deploy", weight=0.2, note="no deployment in the last hour"
                )
            )
    if f.error_types:
        top = max(f.error_types, key=lambda k: f.error_types[k])
        high_errors.append(
            Evidence(
                signal="error_types", value=f.error_types, weight=0.1, note=f"most errors are {top}"
            )
        )

    auth: list[Evidence] = []
    if f.auth_ok is False:
        auth.append(
            Evidence(signal="auth_health", value=False, weight=0.6, note="auth health check fails")
        )
    if f.auth_rate_limited:
        auth.append(
            Evidence(
                signal="auth_429",
                value=f.auth_rate_limited,
                weight=0.5,
                note=f"{f.auth_rate_limited} auth requests rate-limited (429)",
            )
        )
    if f.auth_errors:
        auth.append(
            Evidence(
                signal="auth_errors",
                value=f.auth_errors,
                weight=0.2,
                note=f"{f.auth_errors} auth errors in the logs",
            )
        )

    db: list[Evidence] = []
    if f.db_ok is False:
        db.append(
            Evidence(
                signal="db_connect",
                value=False,
                weight=0.5,
                note="the database connection test failed",
            )
        )
    if f.long_running_queries:
        db.append(
            Evidence(
                signal="long_queries",
                value=f.long_running_queries,
                weight=0.4,
                note=f"{f.long_running_queries} long-running queries",
            )
        )
    elif f.slow_queries:
        # slow but not yet long-running (an alert that fires early): one slow query may be a report
        # someone runs, several at once are the runbook's symptom
        pileup = f.slow_queries >= SLOW_PILEUP
        slowest = f" (the slowest {f.slowest_query_s:.0f} s)" if f.slowest_query_s else ""
        db.append(
            Evidence(
                signal="slow_queries",
                value=f.slow_queries,
                weight=0.4 if pileup else 0.2,
                note=f"{f.slow_queries} quer{'y' if f.slow_queries == 1 else 'ies'} active for "
                f"over a second{slowest}",
            )
        )
    if f.db_latency_ms is not None and f.db_latency_ms > 1000:
        db.append(
            Evidence(
                signal="db_latency",
                value=f.db_latency_ms,
                weight=0.2,
                note=f"SELECT now() took {f.db_latency_ms:.0f} ms",
            )
        )
    if f.db_connection_pct is not None and f.db_connection_pct >= 90:
        db.append(
            Evidence(
                signal="db_connections",
                value=f.db_connection_pct,
                weight=0.3,
                note=f"{f.db_connection_pct:.0f} % of connections in use",
            )
        )
    if f.p95_ms is not None and f.p95_ms >= p95_alert_ms and not deploy_recent:
        db.append(
            Evidence(
                signal="p95", value=f.p95_ms, weight=0.1, note=f"p95 latency {f.p95_ms:.0f} ms"
            )
        )

    edge: list[Evidence] = []
    if f.function_timeouts:
        total = sum(f.function_timeouts.values())
        names = ", ".join(sorted(f.function_timeouts))
        edge.append(
            Evidence(
                signal="function_timeouts",
                value=f.function_timeouts,
                weight=0.6,
                note=f"{total} timeouts in {names}",
            )
        )
    if f.function_success_pct is not None and f.function_success_pct < 95:
        edge.append(
            Evidence(
                signal="function_success",
                value=f.function_success_pct,
                weight=0.3,
                note=f"edge-function success {f.function_success_pct:.1f} %",
            )
        )

    specific = [_h("auth-failure", auth), _h("db-degradation", db), _h("edge-timeouts", edge)]
    residual = _h("high-error-rate", high_errors)
    strongest = max(h.score for h in specific)
    if strongest >= 0.5:
        # errors are a symptom here: a specific cause with strong evidence explains them better
        residual = residual.model_copy(update={"score": round(residual.score * 0.5, 3)})
    hyps = [_h("bad-deploy", bad_deploy), residual, *specific]
    hyps.sort(key=lambda h: h.score, reverse=True)
    return Diagnosis(hypotheses=hyps)
