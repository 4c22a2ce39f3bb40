"""Grafana alerting's webhook (the Alertmanager shape plus ``orgId``, ``state``, ``title`` ...).

Grafana's contract names the alert fingerprint as the dedup key, so each alert rule instance is its
own problem (``grafana:<orgId>:<fingerprint>``); deliveries are identified as Alertmanager's are.
"""

from __future__ import annotations

from collections.abc import Mapping

from runbook.gateway.parsers._common import ParseError, load_json, require_object, text
from runbook.gateway.parsers.alertmanager import parse_document
from runbook.models import Alert

SOURCE = "grafana"


def parse(body: bytes, headers: Mapping[str, str]) -> list[Alert]:
    """Alerts from one Grafana notification.

    Args:
        body: the raw request body.
        headers: the request headers (the signature is checked before parsing).

    Returns:
        One Alert per entry of ``alerts``, keyed by org and fingerprint.

    Raises:
        ParseError: not Grafana's webhook shape.
    """
    doc = require_object(load_json(body), "the body")
    org = text(doc.get("orgId"), "orgId") or "1"
    alerts = parse_document(doc, SOURCE)
    title = text(doc.get("title"), "title")
    for alert in alerts:
        if not alert.fingerprint:
            raise ParseError("every Grafana alert needs a fingerprint")
        alert.dedup_key = f"{SOURCE}:{org}:{alert.fingerprint}"
        if not alert.summary:
            alert.summary = title
    return alerts
