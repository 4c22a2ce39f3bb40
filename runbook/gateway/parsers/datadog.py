"""Datadog webhooks -> Alerts.

Datadog's body is a template the user writes. The documented default has ``id``, ``title``,
``body``, ``event_type``, ``date``, ``last_updated`` and ``org``; the template we recommend adds the
variables that identify an alert (:data:`RECOMMENDED_TEMPLATE`). The parser is
lenient: the dedup key is the first of ``alert_cycle_key``, ``aggreg_key``, ``alert_id``, ``title``
that is present, and ``alert_transition`` "Recovered" means resolved.
"""

from __future__ import annotations

from collections.abc import Mapping

from runbook.gateway.parsers._common import (
    ParseError,
    digest,
    load_json,
    require_object,
    severity,
    text,
    timestamp,
)
from runbook.models import Alert, AlertStatus

SOURCE = "datadog"
RESOLVED_TRANSITIONS = {"recovered", "resolved", "ok"}
KEY_FIELDS = ("alert_cycle_key", "aggreg_key", "alert_id", "title")

RECOMMENDED_TEMPLATE = """{
  "id": "$ID", "title": "$EVENT_TITLE", "body": "$EVENT_MSG", "event_type": "$EVENT_TYPE",
  "date": "$DATE", "last_updated": "$LAST_UPDATED", "org": {"id": "$ORG_ID", "name": "$ORG_NAME"},
  "alert_id": "$ALERT_ID", "alert_transition": "$ALERT_TRANSITION",
  "alert_cycle_key": "$ALERT_CYCLE_KEY", "aggreg_key": "$AGGREG_KEY",
  "alert_priority": "$ALERT_PRIORITY", "tags": "$TAGS", "link": "$LINK"
}"""


def parse(body: bytes, headers: Mapping[str, str]) -> list[Alert]:
    """The Alert one Datadog notification describes.

    Args:
        body: the raw request body.
        headers: the request headers (unused).

    Returns:
        One Alert.

    Raises:
        ParseError: not a JSON object, or nothing that identifies the alert.
    """
    doc = require_object(load_json(body), "the body")
    values = {name: text(doc.get(name), name) for name in (*KEY_FIELDS, "id", "alert_transition")}
    key = next((values[name] for name in KEY_FIELDS if values[name]), "")
    if not key:
        raise ParseError(
            "nothing identifies the alert: the template must send one of " + ", ".join(KEY_FIELDS)
        )
    tags = _tags(doc.get("tags"))
    transition = values["alert_transition"]
    status = (
        AlertStatus.RESOLVED if transition.lower() in RESOLVED_TRANSITIONS else AlertStatus.FIRING
    )
    link = text(doc.get("link"), "link")
    date = doc.get("date")
    # Datadog sends milliseconds in $DATE; RFC 3339 from a custom template also works
    if isinstance(date, int | float) and date > 1e11:
        date = date / 1000
    elif isinstance(date, str) and date.isdigit():
        date = int(date) / (1000 if len(date) > 11 else 1)
    return [
        Alert(
            source=SOURCE,
            delivery_id=values["id"] or digest(key, transition, text(doc.get("last_updated"))),
            fingerprint=values["alert_id"] or key,
            dedup_key=f"{SOURCE}:{key}",
            status=status,
            summary=text(doc.get("title"), "title"),
            labels={**tags, **({"transition": transition} if transition else {})},
            annotations={"description": text(doc.get("body"), "body")} if doc.get("body") else {},
            started_at=timestamp(date, "date"),
            severity_hint=severity(text(doc.get("alert_priority"), "alert_priority"))
            or severity(tags.get("severity")),
            service=tags.get("service", ""),
            links=[link] if link.startswith("https://") else [],
        )
    ]


def _tags(value: object) -> dict[str, str]:
    """``"env:prod,service:api"`` (or a list of such) as labels."""
    if value is None:
        return {}
    if isinstance(value, str):
        parts = [p.strip() for p in value.split(",")]
    elif isinstance(value, list):
        parts = [text(p, "tags") for p in value]
    else:
        raise ParseError("tags must be a string like 'env:prod,service:api' or a list of them")
    out: dict[str, str] = {}
    for part in parts:
        if part:
            name, _, val = part.partition(":")
            out[name[:256]] = val
    return out
