"""The project's own alert schema, for anything that can POST JSON.

One alert, or ``{"alerts": [...]}`` with up to 10,000 of them::

    {
      "key": "checkout-5xx",            # required: alerts with one key are one incident
      "status": "firing",               # firing (default) | resolved
      "summary": "checkout 5xx > 5 %",
      "severity": "P1",                 # P0..P3, or critical/error/warning/info
      "service": "checkout",
      "labels": {"env": "prod"}, "annotations": {"runbook": "https://..."},
      "started_at": "2026-01-01T00:00:00Z", "ended_at": null,
      "links": ["https://grafana.example.com/d/abc"],
      "delivery_id": "optional; else the Idempotency-Key header (+ index), else a content hash"
    }

Strict: it is our own contract, so unknown types are refused with the field's name.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from runbook.gateway.parsers._common import (
    MAX_ALERTS_PER_BODY,
    ParseError,
    digest,
    header,
    load_json,
    require_object,
    severity,
    string_map,
    text,
    timestamp,
)
from runbook.models import Alert, AlertStatus

SOURCE = "generic"
STATUSES = {"firing": AlertStatus.FIRING, "resolved": AlertStatus.RESOLVED}
FIELDS = {
    "key", "status", "summary", "severity", "service", "labels", "annotations", "started_at",
    "ended_at", "links", "delivery_id", "fingerprint",
}  # fmt: skip


def parse(body: bytes, headers: Mapping[str, str]) -> list[Alert]:
    """Alerts in the project's own schema.

    Args:
        body: the raw request body.
        headers: the request headers (``Idempotency-Key``).

    Returns:
        One Alert per item.

    Raises:
        ParseError: naming the first field that is missing or of the wrong type.
    """
    doc = require_object(load_json(body), "the body")
    if "alerts" in doc:
        items = doc["alerts"]
        if not isinstance(items, list) or not items:
            raise ParseError("'alerts' must be a non-empty list")
        if len(items) > MAX_ALERTS_PER_BODY:
            raise ParseError(f"at most {MAX_ALERTS_PER_BODY} alerts per request")
    else:
        items = [doc]
    idempotency = header(headers, "Idempotency-Key")
    return [
        _alert(require_object(item, f"alerts[{i}]"), f"alerts[{i}]", idempotency, i)
        for i, item in enumerate(items)
    ]


def _alert(item: dict[str, Any], where: str, idempotency: str, index: int) -> Alert:
    unknown = sorted(set(item) - FIELDS)
    if unknown:
        raise ParseError(f"{where}: unknown field {unknown[0][:64]!r}; known: {sorted(FIELDS)}")
    key = item.get("key")
    if not isinstance(key, str) or not key.strip():
        raise ParseError(f"{where}.key is required: a non-empty string naming the problem")
    raw_status = item.get("status", "firing")
    status = STATUSES.get(raw_status) if isinstance(raw_status, str) else None
    if status is None:
        raise ParseError(f"{where}.status must be 'firing' or 'resolved'")
    raw_severity = item.get("severity")
    hint = severity(raw_severity)
    if raw_severity is not None and hint is None:
        raise ParseError(f"{where}.severity must be P0..P3 or critical/error/warning/info")
    links = item.get("links", [])
    if not isinstance(links, list) or not all(isinstance(u, str) for u in links):
        raise ParseError(f"{where}.links must be a list of URLs")
    labels = string_map(item.get("labels"), f"{where}.labels")
    annotations = string_map(item.get("annotations"), f"{where}.annotations")
    started = item.get("started_at")
    delivery = text(item.get("delivery_id"), f"{where}.delivery_id")
    if not delivery and idempotency:
        delivery = f"{idempotency}:{index}"
    if not delivery:
        delivery = digest(key, status.value, started, sorted(labels.items()))
    return Alert(
        source=SOURCE,
        delivery_id=delivery,
        fingerprint=text(item.get("fingerprint"), f"{where}.fingerprint") or key,
        dedup_key=f"{SOURCE}:{key}",
        status=status,
        summary=text(item.get("summary"), f"{where}.summary"),
        labels=labels,
        annotations=annotations,
        started_at=timestamp(started, f"{where}.started_at"),
        ended_at=timestamp(item.get("ended_at"), f"{where}.ended_at"),
        severity_hint=hint,
        service=text(item.get("service"), f"{where}.service"),
        links=[u for u in links if u.startswith(("http://", "https://"))],
    )
