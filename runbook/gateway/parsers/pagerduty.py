"""PagerDuty v3 webhooks (``{"event": {...}}``) -> Alerts.

The dedup key is PagerDuty's incident id, so every event about one PagerDuty incident (triggered,
acknowledged, escalated, resolved) lands on one of ours. The delivery id is the ``X-Webhook-Id``
header (PagerDuty keeps it across its retries), else the event id.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from runbook.gateway.parsers._common import (
    ParseError,
    header,
    load_json,
    require_object,
    severity,
    text,
    timestamp,
)
from runbook.models import Alert, AlertStatus

SOURCE = "pagerduty"
RESOLVED_EVENTS = {"incident.resolved"}


def parse(body: bytes, headers: Mapping[str, str]) -> list[Alert]:
    """The Alert one PagerDuty webhook event describes.

    Args:
        body: the raw request body.
        headers: the request headers (``X-Webhook-Id``).

    Returns:
        One Alert, or none for events about something other than an incident (e.g. a ping).

    Raises:
        ParseError: not a v3 webhook event.
    """
    doc = require_object(load_json(body), "the body")
    event = require_object(doc.get("event"), "'event'")
    event_type = text(event.get("event_type"), "event.event_type")
    if not event_type:
        raise ParseError("event.event_type is required (e.g. 'incident.triggered')")
    if not event_type.startswith("incident."):
        return []  # pagey.ping, service.* ...: nothing to respond to
    data = require_object(event.get("data"), "event.data")
    incident_id = text(data.get("id"), "event.data.id")
    if not incident_id:
        raise ParseError("event.data.id (the PagerDuty incident id) is required")
    event_id = text(event.get("id"), "event.id")
    delivery = header(headers, "X-Webhook-Id") or event_id
    if not delivery:
        raise ParseError("no delivery id: send the X-Webhook-Id header or event.id")
    service = _name(data.get("service"), "event.data.service")
    priority = _name(data.get("priority"), "event.data.priority")
    title = text(data.get("title"), "event.data.title")
    urgency = text(data.get("urgency"), "event.data.urgency")
    link = text(data.get("html_url"), "event.data.html_url")
    labels = {
        "event_type": event_type,
        "incident_number": text(data.get("number"), "event.data.number"),
        "incident_key": text(data.get("incident_key"), "event.data.incident_key"),
        "urgency": urgency,
        "priority": priority,
        "pd_status": text(data.get("status"), "event.data.status"),
    }
    return [
        Alert(
            source=SOURCE,
            delivery_id=delivery,
            fingerprint=incident_id,
            dedup_key=f"{SOURCE}:{incident_id}",
            status=AlertStatus.RESOLVED if event_type in RESOLVED_EVENTS else AlertStatus.FIRING,
            summary=title,
            labels={k: v for k, v in labels.items() if v},
            started_at=timestamp(event.get("occurred_at"), "event.occurred_at"),
            severity_hint=severity(priority) or severity(urgency),
            service=service,
            links=[link] if link.startswith("https://") else [],
        )
    ]


def _name(value: Any, where: str) -> str:
    """A PagerDuty reference object's summary (or a bare string)."""
    if isinstance(value, dict):
        return text(value.get("summary") or value.get("name") or value.get("id"), where)
    return text(value, where)
