"""SLA clocks and escalation decisions, as plain functions over the policy and the injected clock.

A phase's deadline comes from the incident's detection time and its severity's windows (policy). A
breach never stops the work: it produces an Escalation (who is next in the chain, and why) for the
flow or the watcher to record and send.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from pydantic import BaseModel

from runbook.models import Incident, Phase, Severity
from runbook.policy import Policy, SeverityAction, format_duration


class Escalation(BaseModel):
    """A decision to escalate: to which level of the chain, and the reason a person reads."""

    level: int
    role: str
    contact: str
    reason: str
    kind: str  # sla_breach | resolution_overrun | severity_increase


def escalate(policy: Policy, incident: Incident, kind: str, reason: str) -> Escalation:
    """The next level of the chain above where the incident stands now."""
    level = incident.escalation_level + 1
    contact = policy.escalation_level(level - 1)
    return Escalation(
        level=level, role=contact.role, contact=contact.contact, reason=reason, kind=kind
    )


def breach_reason(phase: Phase, due_at: datetime, now: datetime) -> str:
    late = format_duration(timedelta(seconds=max(0, int((now - due_at).total_seconds()))))
    return f"{phase.value} missed its deadline {due_at:%H:%M:%S} UTC (late by {late})"


def check_overrun(policy: Policy, incident: Incident, now: datetime) -> Escalation | None:
    """Escalate an open incident whose resolution has taken more than 2x its estimate."""
    if not incident.is_open:
        return None
    elapsed = now - incident.detected_at
    if not policy.resolution_overrun(incident.severity, elapsed):
        return None
    est = policy.severities[incident.severity].estimated_resolution
    factor = policy.escalation.resolution_overrun_factor
    reason = (
        f"open for {format_duration(elapsed)}, more than {factor:g}x the "
        f"{format_duration(est)} estimate for {incident.severity.value}"
    )
    return escalate(policy, incident, "resolution_overrun", reason)


def added_actions(policy: Policy, old: Severity, new: Severity) -> list[SeverityAction]:
    """What a rise in severity newly requires (a P2 that becomes P0 gets paged and a war room)."""
    before = set(policy.severities[old].actions)
    return [a for a in policy.severities[new].actions if a not in before]


def on_severity_change(
    policy: Policy, incident: Incident, new: Severity
) -> tuple[Escalation | None, list[SeverityAction]]:
    """A rising severity escalates (when the policy says so) and adds the new level's actions."""
    old = incident.severity
    if not new.is_higher_than(old):
        return None, []
    esc = None
    if policy.escalation.on_severity_increase:
        esc = escalate(
            policy, incident, "severity_increase", f"severity rose from {old.value} to {new.value}"
        )
    return esc, added_actions(policy, old, new)


def remaining(due_at: datetime | None, now: datetime) -> float | None:
    """Seconds left before ``due_at`` (negative when past), None without a deadline."""
    return None if due_at is None else (due_at - now).total_seconds()
