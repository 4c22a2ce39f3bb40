"""The RCA document: the runbook's template filled from the ledger (pure: no I/O but the template).

What the automation knows (timeline, duration, hypothesis and evidence, actions, affected-user
estimate) is filled in; what only a person can write is marked as such, never invented.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from jinja2 import Environment, PackageLoader, StrictUndefined

from runbook.models import Action, ActionItem, ActionStatus, Diagnosis, Incident, TimelineEvent
from runbook.policy import format_duration

_env = Environment(
    loader=PackageLoader("runbook", "templates"),
    undefined=StrictUndefined,
    autoescape=False,  # noqa: S701 - markdown for people, not HTML
    trim_blocks=False,
    lstrip_blocks=False,
    keep_trailing_newline=True,
)


def render_rca(
    incident: Incident,
    timeline: Sequence[TimelineEvent],
    actions: Sequence[Action],
    action_items: Sequence[ActionItem],
    now: datetime,
) -> str:
    """Render the RCA markdown for ``incident``."""
    end = incident.resolved_at or incident.closed_at
    duration = (
        format_duration(timedelta(seconds=int((end - incident.detected_at).total_seconds())))
        if end
        else None
    )
    diag = incident.diagnosis or {}
    hypothesis = Diagnosis.model_validate({"hypotheses": diag.get("hypotheses", [])}).top
    if hypothesis is not None and hypothesis.score <= 0:
        hypothesis = None
    radius = diag.get("blast_radius") or {}
    affected = (
        f"~{radius['estimate']} users (estimate: {radius.get('basis', '')})"
        if radius.get("estimate") is not None
        else None
    )
    findings = diag.get("findings") or {}
    technical = None
    if findings.get("error_rate_pct") is not None:
        technical = f"error rate {findings['error_rate_pct']:.2f} %"
        if findings.get("p95_ms") is not None:
            technical += f", p95 latency {findings['p95_ms']:.0f} ms"
    resolution = [
        f"{a.kind} on {a.target}: {a.status.value}"
        for a in actions
        if a.status is ActionStatus.APPLIED and a.kind not in ("post_message",)
    ]
    return _env.get_template("rca.md.j2").render(
        incident=incident,
        duration=duration,
        affected=affected,
        affected_line=affected,
        timeline=timeline,
        hypothesis=hypothesis,
        technical=technical,
        resolution=resolution,
        action_items=action_items,
        now=now,
    )
