"""The threshold watcher's decisions: readings + policy -> alerts to fire or resolve. No I/O.

One watch run makes one ``Observation`` of a service: every metric the policy has a threshold for,
or why the monitoring source could not be read. From it:

- ``firing_intakes``: one firing ``Alert`` (source ``watch``) per breached metric, all with the
  service's dedup key ``watch:<service>``, so the metrics of one service share one incident and
  later runs attach to it (the gateway's path: ``Ledger.record_alerts``). An unreadable source is a
  P3 alert of its own, key ``watch:<service>:monitoring-source``: never "healthy by silence".
- ``watch_state`` + ``decide``: whether an incident the watcher opened has been healthy long
  enough (the policy's ``monitoring.auto_resolve_after``) to resolve.

How "healthy for the window" is kept, in the ledger and without schema changes:

- every run that finds a metric breached stores a firing alert, so the newest firing alert of the
  incident is the last time it was seen unhealthy;
- the first run after that in which every metric the incident fired for reads healthy writes a
  ``watch_healthy`` timeline event: the streak starts there;
- a run that cannot tell (source unreachable, no data for one of those metrics) while a streak runs
  writes a ``watch_blind`` event, which ends the streak: not knowing is not healthy;
- the incident resolves on the first run at least ``auto_resolve_after`` after the streak's start
  that still reads healthy. A reopened incident starts over (its reopening ends any streak).

Flapping needs no extra rule here: any breach inside the window ends the streak, so the watcher
resolves at most once per ``auto_resolve_after``, which the policy keeps longer than ``flap_window``.
"""

from __future__ import annotations

import re
from collections import deque
from datetime import datetime, timedelta
from typing import Literal

from pydantic import BaseModel, Field

from runbook.ledger import AlertIntake
from runbook.metrics import Readings
from runbook.models import (
    TRANSITIONS,
    Alert,
    AlertStatus,
    IncidentStatus,
    Severity,
    TimelineEvent,
)
from runbook.playbooks.severity import ThresholdFinding
from runbook.policy import Policy
from runbook.thresholds import alert_name, describe, evaluate

WATCH_SOURCE = "watch"
SOURCE_METRIC = "monitoring_source"
SOURCE_SEVERITY = Severity.P3
HEALTHY_EVENT = "watch_healthy"
BLIND_EVENT = "watch_blind"
_SERVICE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
_USERINFO = re.compile(r"(://)[^/@\s]+@")

MetricStatus = Literal["breached", "healthy", "unknown"]


def check_service(service: str) -> str:
    """The service name, if it can be part of a dedup key.

    Raises:
        ValueError: saying what a valid name looks like.
    """
    if not isinstance(service, str) or not _SERVICE.fullmatch(service):
        raise ValueError(
            f"service {service!r} is not a valid service name: use 1-63 letters, digits, '.', '_' "
            "or '-', starting with a letter or digit (e.g. web)"
        )
    return service


def incident_dedup_key(service: str) -> str:
    """The dedup key of the service's threshold incident (every breached metric shares it)."""
    return f"{WATCH_SOURCE}:{service}"


def source_dedup_key(service: str) -> str:
    """The dedup key of the service's "monitoring source unreachable" incident."""
    return f"{WATCH_SOURCE}:{service}:monitoring-source"


def fingerprint(service: str, metric: str) -> str:
    """One alert identity per metric and service."""
    return f"{WATCH_SOURCE}:{service}:{metric}"


def redact(text: str) -> str:
    """Drop credentials written into URLs (``https://user:pass@host``) from an error message."""
    return _USERINFO.sub(r"\1***@", text)


class Observation(BaseModel):
    """One watch run's look at a service's metrics."""

    service: str
    at: datetime = Field(description="When the metrics were read (real time).")
    findings: list[ThresholdFinding] = Field(
        default_factory=list, description="Every metric that had data, with its level."
    )
    error: str | None = Field(
        None, description="Why the source could not be read, if it could not."
    )

    def status_of(self, metric: str) -> MetricStatus:
        """Breached, healthy, or unknown (source unreadable, or no data for the metric)."""
        if metric == SOURCE_METRIC:
            return "breached" if self.error is not None else "healthy"
        if self.error is not None:
            return "unknown"
        for f in self.findings:
            if f.metric == metric:
                return "breached" if f.level == "alert" else "healthy"
        return "unknown"

    @property
    def breached(self) -> list[ThresholdFinding]:
        return [f for f in self.findings if f.level == "alert"]


def observe(policy: Policy, service: str, readings: Readings, at: datetime) -> Observation:
    """The observation of ``readings`` against the policy's thresholds."""
    return Observation(service=service, at=at, findings=evaluate(policy, readings))


def unreachable(service: str, at: datetime, reason: str) -> Observation:
    """The observation when the metrics could not be read (``reason`` is redacted)."""
    return Observation(service=service, at=at, error=redact(reason) or "unknown error")


def firing_intakes(policy: Policy, obs: Observation) -> list[AlertIntake]:
    """The alerts to record for this observation, most severe first (the first opens the incident).

    Returns:
        One P3 ``monitoring_source`` alert when the source could not be read; else one alert per
        breached metric; empty when nothing is breached.
    """
    if obs.error is not None:
        summary = f"monitoring source unreachable for {obs.service}: {obs.error}"
        alert = _alert(
            obs, SOURCE_METRIC, source_dedup_key(obs.service), summary, SOURCE_SEVERITY,
            annotations={"summary": summary, "error": obs.error},
        )  # fmt: skip
        description = (
            f"The threshold watcher could not read the metrics of {obs.service}, so it cannot "
            "tell whether the service is healthy. Check the AppEndpoint block's metrics_url and "
            "that the metrics endpoint answers."
        )
        title = f"Monitoring source unreachable: {obs.service} metrics"
        intake = AlertIntake(
            alert=alert, title=title, severity=SOURCE_SEVERITY, service=obs.service,
            description=description,
        )  # fmt: skip
        return [intake]
    breached = sorted(
        obs.breached, key=lambda f: (policy.thresholds[f.metric].severity.rank, f.metric)
    )
    if not breached:
        return []
    severity = policy.thresholds[breached[0].metric].severity
    title = f"Thresholds breached on {obs.service}: " + "; ".join(
        describe(policy, f) for f in breached
    )
    description = (
        "Opened by the threshold watcher from the app's metrics and the policy's thresholds."
    )
    intakes = []
    for f in breached:
        t = policy.thresholds[f.metric]
        summary = f"{alert_name(f.metric)} on {obs.service}: {describe(policy, f)}"
        annotations = {
            "summary": summary, "value": f"{f.value:.4f}", "threshold": f"{t.alert:g}",
            "unit": t.unit, "worse": t.worse,
        }  # fmt: skip
        alert = _alert(
            obs, f.metric, incident_dedup_key(obs.service), summary, t.severity, annotations
        )
        intakes.append(
            AlertIntake(
                alert=alert,
                title=title[:512],
                severity=severity,
                service=obs.service,
                description=description,
            )  # fmt: skip
        )
    return intakes


def _alert(
    obs: Observation,
    metric: str,
    dedup_key: str,
    summary: str,
    severity: Severity,
    annotations: dict[str, str],
    status: AlertStatus = AlertStatus.FIRING,
) -> Alert:
    fp = fingerprint(obs.service, metric)
    labels = {
        "alertname": alert_name(metric) if metric != SOURCE_METRIC else "MonitoringSourceDown",
        "service": obs.service, "metric": metric, "severity": severity.value,
    }  # fmt: skip
    return Alert(
        source=WATCH_SOURCE,
        # one delivery per run and metric: a retried run with the same reading changes nothing
        delivery_id=f"{fp}:{status.value}:{obs.at.isoformat()}",
        fingerprint=fp,
        dedup_key=dedup_key,
        status=status,
        summary=summary,
        labels=labels,
        annotations=annotations,
        started_at=obs.at,
        ended_at=obs.at if status == AlertStatus.RESOLVED else None,
        severity_hint=severity,
        service=obs.service,
        received_at=obs.at,
    )


def resolved_alerts(
    obs: Observation, dedup_key: str, metrics: set[str], reason: str
) -> list[Alert]:
    """One resolved alert per metric the incident fired for (attached by its dedup key)."""
    out = []
    for metric in sorted(metrics):
        summary = f"{metric} on {obs.service} healthy: {reason}"
        severity = SOURCE_SEVERITY if metric == SOURCE_METRIC else Severity.P3
        alert = _alert(
            obs, metric, dedup_key, summary, severity, {"summary": summary}, AlertStatus.RESOLVED
        )
        alert.severity_hint = None  # a resolved alert says nothing about severity
        alert.labels.pop("severity")
        out.append(alert)
    return out


class WatchState(BaseModel):
    """What the ledger says about one incident the watcher opened."""

    metrics: set[str] = Field(description="Every metric the incident fired for.")
    last_firing: datetime | None = Field(None, description="When it was last seen breached.")
    healthy_since: datetime | None = Field(
        None, description="Start of the current healthy streak, if one runs."
    )


def watch_state(alerts: list[Alert], events: list[TimelineEvent]) -> WatchState:
    """Read the incident's watcher alerts and timeline (see the module docstring)."""
    firing = [a for a in alerts if a.source == WATCH_SOURCE and a.status == AlertStatus.FIRING]
    metrics = {a.labels["metric"] for a in firing if a.labels.get("metric")}
    seen = [a.received_at for a in firing if a.received_at is not None]
    last_firing = max(seen) if seen else None
    # the streak can only start after the last breach, the last "cannot tell" and any reopening
    ends = [e.at for e in events if e.kind == BLIND_EVENT or (e.kind == "status" and _reopens(e))]
    floor = max([t for t in (last_firing, *ends) if t is not None], default=None)
    starts = [e.at for e in events if e.kind == HEALTHY_EVENT and (floor is None or e.at > floor)]
    marker = min(starts, default=None)
    return WatchState(metrics=metrics, last_firing=last_firing, healthy_since=marker)


def _reopens(event: TimelineEvent) -> bool:
    try:
        before, after = (
            IncidentStatus(str(event.data.get("from"))),
            IncidentStatus(str(event.data.get("to"))),
        )
    except ValueError:
        return False
    return after.is_open and not before.is_open


class Decision(BaseModel):
    """What the watcher does about one of its incidents after one observation."""

    verdict: Literal["firing", "blind", "healthy", "resolve"]
    mark: Literal["watch_healthy", "watch_blind"] | None = Field(
        None, description="The timeline event to write (a streak starts or ends)."
    )
    reason: str
    healthy_since: datetime | None = None


def decide(state: WatchState, obs: Observation, now: datetime, window: timedelta) -> Decision:
    """Still firing, cannot tell, healthy (waiting out the window), or resolve.

    Args:
        state: the incident as the ledger holds it.
        obs: this run's observation.
        now: the current (real) time.
        window: how long it must stay healthy: ``auto_resolve_after`` compressed by the speed.
    """
    if not state.metrics:
        return Decision(verdict="blind", reason="no watcher alert is attached to this incident")
    statuses = {m: obs.status_of(m) for m in sorted(state.metrics)}
    breached = [m for m, s in statuses.items() if s == "breached"]
    if breached:
        return Decision(verdict="firing", reason="still past the threshold: " + ", ".join(breached))
    unknown = [m for m, s in statuses.items() if s == "unknown"]
    if unknown:
        why = obs.error or "no data for " + ", ".join(unknown)
        return Decision(
            verdict="blind",
            mark=BLIND_EVENT if state.healthy_since is not None else None,
            reason=f"cannot tell whether {', '.join(unknown)} recovered: {why}",
        )
    since = state.healthy_since or now
    mark = HEALTHY_EVENT if state.healthy_since is None else None
    healthy_for = now - since
    names = ", ".join(statuses)
    if healthy_for >= window:
        return Decision(
            verdict="resolve", mark=mark, healthy_since=since,
            reason=f"{names} healthy for {_seconds(healthy_for)} (window {_seconds(window)})",
        )  # fmt: skip
    return Decision(
        verdict="healthy", mark=mark, healthy_since=since,
        reason=f"{names} healthy for {_seconds(healthy_for)} of {_seconds(window)}",
    )  # fmt: skip


def _seconds(td: timedelta) -> str:
    return f"{td.total_seconds():.1f} s"


def path_to_resolved(status: IncidentStatus) -> list[IncidentStatus] | None:
    """The shortest legal lifecycle path from ``status`` to resolved, through open states only.

    Returns:
        The statuses to move through, ending with RESOLVED; ``[]`` when already resolved; None
        when the incident is not open (closed, in review) and the watcher must leave it alone.
    """
    if status == IncidentStatus.RESOLVED:
        return []
    if not status.is_open:
        return None
    paths: dict[IncidentStatus, list[IncidentStatus]] = {status: []}
    queue = deque([status])
    while queue:
        here = queue.popleft()
        for nxt in sorted(TRANSITIONS[here]):
            if nxt in paths:
                continue
            paths[nxt] = [*paths[here], nxt]
            if nxt == IncidentStatus.RESOLVED:
                return paths[nxt]
            if nxt.is_open:
                queue.append(nxt)
    return None
