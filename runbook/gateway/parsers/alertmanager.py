"""Prometheus Alertmanager's webhook (``version "4"``) -> Alerts.

One incident per alert group: the dedup key is the notification's ``groupKey``. A delivery is one
alert's state in one group (groupKey + fingerprint + startsAt + status), so Alertmanager's repeat
notifications of a still-firing alert are redeliveries that change nothing, while its resolved
notification is a new delivery that attaches to the group's incident.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from runbook.gateway.parsers._common import (
    MAX_ALERTS_PER_BODY,
    ParseError,
    digest,
    label_fingerprint,
    load_json,
    require_object,
    severity,
    string_map,
    text,
    timestamp,
)
from runbook.models import Alert, AlertStatus

SOURCE = "alertmanager"
STATUSES = {"firing": AlertStatus.FIRING, "resolved": AlertStatus.RESOLVED}


def parse(body: bytes, headers: Mapping[str, str]) -> list[Alert]:
    """Alerts from one Alertmanager notification.

    Args:
        body: the raw request body.
        headers: the request headers (unused: Alertmanager signs nothing).

    Returns:
        One Alert per entry of ``alerts``.

    Raises:
        ParseError: not the Alertmanager webhook shape (the reason says what is missing).
    """
    return parse_document(require_object(load_json(body), "the body"), SOURCE)


def parse_document(doc: dict[str, Any], source: str, group_key: str | None = None) -> list[Alert]:
    """The Alertmanager-shaped part shared with Grafana.

    Args:
        doc: the decoded body.
        source: ``alertmanager`` or ``grafana``.
        group_key: the dedup key for every alert (default: the body's ``groupKey``).

    Returns:
        One Alert per entry of ``alerts``.

    Raises:
        ParseError: ``alerts`` missing or malformed.
    """
    items = doc.get("alerts")
    if not isinstance(items, list) or not items:
        raise ParseError("'alerts' must be a non-empty list of alerts")
    if len(items) > MAX_ALERTS_PER_BODY:
        raise ParseError(f"at most {MAX_ALERTS_PER_BODY} alerts per notification")
    key = group_key if group_key is not None else text(doc.get("groupKey"), "groupKey")
    common_labels = string_map(doc.get("commonLabels"), "commonLabels")
    common_annotations = string_map(doc.get("commonAnnotations"), "commonAnnotations")
    group_status = text(doc.get("status"), "status")
    external_url = text(doc.get("externalURL"), "externalURL")
    alerts = []
    for index, raw in enumerate(items):
        item = require_object(raw, f"alerts[{index}]")
        alerts.append(
            _alert(item, index, source, key, group_status, common_labels, common_annotations,
                   external_url)
        )  # fmt: skip
    return alerts


def _alert(
    item: dict[str, Any],
    index: int,
    source: str,
    group_key: str,
    group_status: str,
    common_labels: dict[str, str],
    common_annotations: dict[str, str],
    external_url: str,
) -> Alert:
    where = f"alerts[{index}]"
    labels = {**common_labels, **string_map(item.get("labels"), f"{where}.labels")}
    if not labels:
        raise ParseError(f"{where}.labels must name the alert (at least 'alertname')")
    annotations = {
        **common_annotations,
        **string_map(item.get("annotations"), f"{where}.annotations"),
    }
    raw_status = text(item.get("status"), f"{where}.status") or group_status
    status = STATUSES.get(raw_status)
    if status is None:
        raise ParseError(f"{where}.status must be 'firing' or 'resolved', got {raw_status[:32]!r}")
    fingerprint = text(item.get("fingerprint"), f"{where}.fingerprint") or label_fingerprint(labels)
    starts = text(item.get("startsAt"), f"{where}.startsAt")
    started_at = timestamp(starts or None, f"{where}.startsAt")
    ended_at = timestamp(item.get("endsAt"), f"{where}.endsAt")
    key = group_key or f"{labels.get('alertname', '')}:{fingerprint}"
    links = [
        u
        for u in (text(item.get(name), f"{where}.{name}") for name in _LINK_FIELDS)
        if u.startswith(("http://", "https://"))
    ]
    if external_url and not links:
        links.append(external_url)
    return Alert(
        source=source,
        delivery_id=digest(group_key, fingerprint, starts, status.value),
        fingerprint=fingerprint,
        dedup_key=f"{source}:{key}",
        status=status,
        summary=annotations.get("summary") or labels.get("alertname", ""),
        labels=labels,
        annotations=annotations,
        started_at=started_at,
        ended_at=ended_at if status == AlertStatus.RESOLVED else None,
        severity_hint=severity(labels.get("severity") or labels.get("priority")),
        service=labels.get("service") or labels.get("job", ""),
        links=links,
    )


_LINK_FIELDS = ("generatorURL", "dashboardURL", "panelURL", "silenceURL")
