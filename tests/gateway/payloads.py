"""Sender payloads built from their documented shapes, and signed the way each sender signs."""

from __future__ import annotations

import base64
import json
from typing import Any

from runbook.gateway.auth import sign
from tests.gateway.conftest import GRAFANA_SECRET, PD_SECRET, SENTRY_SECRET, TOKEN


def bearer(token: str = TOKEN) -> dict[str, str]:
    """JSON content type and a bearer token."""
    return {"content-type": "application/json", "authorization": f"Bearer {token}"}


def basic(password: str = TOKEN, user: str = "alertmanager") -> dict[str, str]:
    """JSON content type and basic auth."""
    raw = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"content-type": "application/json", "authorization": f"Basic {raw}"}


def am_alert(name: str = "HighErrorRate", status: str = "firing", fp: str = "fp1",
             starts: str = "2026-03-01T11:59:00Z", **labels: str) -> dict[str, Any]:  # fmt: skip
    """One entry of an Alertmanager notification's ``alerts``."""
    return {
        "status": status,
        "labels": {"alertname": name, "severity": "critical", "service": "checkout", **labels},
        "annotations": {"summary": f"{name} on checkout", "description": "5xx above 5 %"},
        "startsAt": starts,
        "endsAt": "2026-03-01T12:05:00Z" if status == "resolved" else "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus:9090/graph?g0.expr=rate",
        "fingerprint": fp,
    }


def alertmanager(*alerts: dict[str, Any], group: str = '{}:{alertname="HighErrorRate"}',
                 status: str = "firing") -> bytes:  # fmt: skip
    """An Alertmanager webhook (version 4) body."""
    doc = {
        "version": "4", "groupKey": group, "truncatedAlerts": 0, "status": status,
        "receiver": "runbook", "groupLabels": {"alertname": "HighErrorRate"},
        "commonLabels": {"alertname": "HighErrorRate"}, "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093", "alerts": list(alerts) or [am_alert()],
    }  # fmt: skip
    return json.dumps(doc).encode()


def grafana(fp: str = "gfp1", status: str = "firing") -> bytes:
    """A Grafana alerting webhook body."""
    alert = am_alert("CPUHigh", status, fp)
    alert.update(values={"B": 97.5}, silenceURL="https://grafana.example.com/alerting/silence/new",
                 dashboardURL="https://grafana.example.com/d/abc", panelURL="", imageURL="")  # fmt: skip
    doc = {
        "receiver": "runbook", "status": status, "orgId": 1, "alerts": [alert],
        "groupLabels": {}, "commonLabels": {"alertname": "CPUHigh"}, "commonAnnotations": {},
        "externalURL": "https://grafana.example.com/", "version": "1",
        "groupKey": '{}:{alertname="CPUHigh"}', "truncatedAlerts": 0,
        "title": "[FIRING:1] CPUHigh", "state": "alerting" if status == "firing" else "ok",
        "message": "CPU is high",
    }  # fmt: skip
    return json.dumps(doc).encode()


def grafana_headers(
    body: bytes, ts: str | None = None, secret: str = GRAFANA_SECRET
) -> dict[str, str]:
    """Grafana's HMAC headers (with the optional timestamp)."""
    headers = {"content-type": "application/json",
               "x-grafana-alerting-signature": sign(secret, body, ts)}  # fmt: skip
    if ts is not None:
        headers["x-grafana-alerting-timestamp"] = ts
    return headers


def pagerduty(event_type: str = "incident.triggered", incident: str = "PGR0VU2",
              event_id: str = "01DEN1HNLBC1VITTUN4OA", urgency: str = "high") -> bytes:  # fmt: skip
    """A PagerDuty v3 webhook body."""
    doc: dict[str, Any] = {"event": {
        "id": event_id, "event_type": event_type, "resource_type": "incident",
        "occurred_at": "2026-03-01T11:58:00.000Z",
        "agent": {"html_url": "https://acme.pagerduty.com/users/PLH1HKV", "id": "PLH1HKV",
                  "summary": "Tenex Engineer", "type": "user_reference"},
        "client": None,
        "data": {
            "id": incident, "type": "incident", "self": f"https://api.pagerduty.com/incidents/{incident}",
            "html_url": f"https://acme.pagerduty.com/incidents/{incident}", "number": 2,
            "status": "resolved" if event_type == "incident.resolved" else "triggered",
            "incident_key": "d3640fbd41094207a1c11e58e46b1662", "created_at": "2026-03-01T11:58:00Z",
            "title": "A little bump in the road", "urgency": urgency,
            "service": {"html_url": "https://acme.pagerduty.com/services/PF9KMXH", "id": "PF9KMXH",
                        "summary": "API Service", "type": "service_reference"},
            "assignees": [], "escalation_policy": {"id": "PABO808", "summary": "Default"},
            "teams": [], "priority": {"id": "PSO75BM", "summary": "P1"},
        },
    }}  # fmt: skip
    return json.dumps(doc).encode()


def pagerduty_headers(body: bytes, *secrets: str, webhook_id: str = "wh-1") -> dict[str, str]:
    """PagerDuty's signature header: one ``v1=`` per secret (several while rotating)."""
    sigs = ",".join(f"v1={sign(s, body)}" for s in (secrets or (PD_SECRET,)))
    return {"content-type": "application/json", "x-pagerduty-signature": sigs,
            "x-webhook-id": webhook_id}  # fmt: skip


def sentry_metric_alert(action: str = "critical", alert_id: str = "6") -> bytes:
    """A Sentry metric_alert webhook body."""
    doc = {
        "action": action,
        "actor": {"id": "sentry", "name": "Sentry", "type": "application"},
        "data": {
            "description_text": "1000 events in the last 10 minutes",
            "description_title": "Critical: Too many errors",
            "metric_alert": {
                "id": alert_id, "identifier": "2", "status": 20 if action == "critical" else 0,
                "date_started": "2026-03-01T11:50:00Z", "date_detected": "2026-03-01T11:50:00Z",
                "alert_rule": {"id": "7", "name": "Too many errors", "aggregate": "count()"},
                "title": "Too many errors",
            },
            "web_url": "https://sentry.io/organizations/acme/alerts/1/",
        },
        "installation": {"uuid": "7a485448-a9e2-4c85-8a3c-4f44175783c9"},
    }  # fmt: skip
    return json.dumps(doc).encode()


def sentry_headers(body: bytes, resource: str = "metric_alert", request_id: str = "req-1",
                   secret: str = SENTRY_SECRET) -> dict[str, str]:  # fmt: skip
    """Sentry's webhook headers, signed with the client secret."""
    return {"content-type": "application/json", "sentry-hook-resource": resource,
            "sentry-hook-timestamp": "1772366400", "request-id": request_id,
            "sentry-hook-signature": sign(secret, body)}  # fmt: skip


def datadog(transition: str = "Triggered", cycle: str = "cycle-1", event_id: str = "ev-1") -> bytes:
    """A Datadog webhook body from the recommended template."""
    doc = {
        "id": event_id, "title": "[Triggered] p95 latency high on api", "body": "p95 > 2s",
        "event_type": "query_alert_monitor", "date": "1772366400000",
        "last_updated": "1772366400000", "org": {"id": "1", "name": "acme"},
        "alert_id": "12345", "alert_transition": transition, "alert_cycle_key": cycle,
        "aggreg_key": "agg-1", "alert_priority": "P2", "tags": "env:prod,service:api",
        "link": "https://app.datadoghq.com/event/event?id=1",
    }  # fmt: skip
    return json.dumps(doc).encode()


def generic(key: str = "checkout-5xx", status: str = "firing", **extra: Any) -> bytes:
    """A body in the project's own schema."""
    return json.dumps({"key": key, "status": status, "summary": "checkout 5xx",
                       "severity": "P1", "service": "checkout", **extra}).encode()  # fmt: skip
