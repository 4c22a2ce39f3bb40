"""Sentry integration webhooks -> Alerts.

Sentry names the resource in ``Sentry-Hook-Resource`` and identifies each delivery with
``Request-ID``. Metric alerts (action critical/warning/resolved) are keyed by the metric alert
incident's id; issue alerts and issue events by the Sentry issue id, so every event of one issue
joins one incident. Other resources (installation, comment, error ...) carry no alert.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from runbook.gateway.parsers._common import (
    ParseError,
    digest,
    header,
    load_json,
    require_object,
    severity,
    text,
    timestamp,
)
from runbook.models import Alert, AlertStatus

SOURCE = "sentry"
RESOLVED_ACTIONS = {"resolved"}
ISSUE_ALERT_ACTIONS = {"created", "unresolved", "resolved"}


def parse(body: bytes, headers: Mapping[str, str]) -> list[Alert]:
    """The Alert one Sentry webhook describes.

    Args:
        body: the raw request body.
        headers: the request headers (``Sentry-Hook-Resource``, ``Request-ID``).

    Returns:
        One Alert, or none for resources that are not alerts.

    Raises:
        ParseError: the resource header is missing or the body is not Sentry's shape for it.
    """
    resource = header(headers, "Sentry-Hook-Resource")
    if not resource:
        raise ParseError("the Sentry-Hook-Resource header is required")
    doc = require_object(load_json(body), "the body")
    action = text(doc.get("action"), "action")
    data = require_object(doc.get("data"), "'data'")
    if resource == "metric_alert":
        alert = _metric_alert(data, action)
    elif resource == "event_alert":
        alert = _event_alert(data)
    elif resource == "issue" and action in ISSUE_ALERT_ACTIONS:
        alert = _issue(data, action)
    else:
        return []
    request_id = header(headers, "Request-ID")
    alert.delivery_id = request_id or digest(resource, action, alert.dedup_key, body)
    return [alert]


def _metric_alert(data: dict[str, Any], action: str) -> Alert:
    metric = require_object(data.get("metric_alert"), "data.metric_alert")
    alert_id = text(metric.get("id") or metric.get("identifier"), "data.metric_alert.id")
    if not alert_id:
        raise ParseError("data.metric_alert.id is required")
    rule = _obj(metric.get("alert_rule"))
    link = text(data.get("web_url"), "data.web_url")
    return Alert(
        source=SOURCE,
        delivery_id="pending",
        fingerprint=alert_id,
        dedup_key=f"{SOURCE}:metric_alert:{alert_id}",
        status=AlertStatus.RESOLVED if action in RESOLVED_ACTIONS else AlertStatus.FIRING,
        summary=text(data.get("description_title"), "data.description_title")
        or text(rule.get("name"), "alert_rule.name"),
        labels={"resource": "metric_alert", "action": action,
                "alert_rule": text(rule.get("name"), "alert_rule.name")},
        annotations={"description": text(data.get("description_text"), "description_text")},
        started_at=timestamp(metric.get("date_started"), "data.metric_alert.date_started"),
        severity_hint=severity(action),
        links=[link] if link.startswith("https://") else [],
    )  # fmt: skip


def _event_alert(data: dict[str, Any]) -> Alert:
    event = require_object(data.get("event"), "data.event")
    issue_id = text(event.get("issue_id"), "data.event.issue_id")
    event_id = text(event.get("event_id"), "data.event.event_id")
    if not (issue_id or event_id):
        raise ParseError("data.event needs issue_id or event_id")
    link = text(event.get("web_url"), "data.event.web_url")
    rule = text(data.get("triggered_rule"), "data.triggered_rule")
    return Alert(
        source=SOURCE,
        delivery_id="pending",
        fingerprint=issue_id or event_id,
        dedup_key=f"{SOURCE}:issue:{issue_id or event_id}",
        summary=text(event.get("title"), "data.event.title") or rule,
        labels={"resource": "event_alert", "triggered_rule": rule,
                "level": text(event.get("level"), "data.event.level")},
        started_at=timestamp(event.get("datetime"), "data.event.datetime"),
        severity_hint=severity(event.get("level")),
        links=[link] if link.startswith("https://") else [],
    )  # fmt: skip


def _issue(data: dict[str, Any], action: str) -> Alert:
    issue = require_object(data.get("issue"), "data.issue")
    issue_id = text(issue.get("id"), "data.issue.id")
    if not issue_id:
        raise ParseError("data.issue.id is required")
    project = _obj(issue.get("project"))
    link = text(issue.get("web_url") or issue.get("permalink"), "data.issue.web_url")
    return Alert(
        source=SOURCE,
        delivery_id="pending",
        fingerprint=issue_id,
        dedup_key=f"{SOURCE}:issue:{issue_id}",
        status=AlertStatus.RESOLVED if action in RESOLVED_ACTIONS else AlertStatus.FIRING,
        summary=text(issue.get("title"), "data.issue.title"),
        labels={"resource": "issue", "action": action,
                "short_id": text(issue.get("shortId"), "data.issue.shortId"),
                "level": text(issue.get("level"), "data.issue.level")},
        started_at=timestamp(issue.get("firstSeen"), "data.issue.firstSeen"),
        severity_hint=severity(issue.get("level")),
        service=text(project.get("slug"), "project.slug"),
        links=[link] if link.startswith("https://") else [],
    )  # fmt: skip


def _obj(value: Any) -> dict[str, Any]:
    """A nested object Sentry may leave out: ``{}`` unless it is one."""
    return value if isinstance(value, dict) else {}
