"""The drill's alerting system: Prometheus-style rules over the app's metrics, sent as Alertmanager would.

The app's metrics are scraped twice over a short window; every metric past its policy threshold becomes
one alert of an Alertmanager v4 webhook notification (one group per service, so one incident), posted
to the gateway with a bearer token, exactly as a production Alertmanager's ``webhook_configs`` would.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from datetime import datetime

import httpx
from pydantic import BaseModel

from runbook.clients.app import AppClient
from runbook.metrics import readings_between
from runbook.playbooks.severity import ThresholdFinding
from runbook.policy import Policy
from runbook.thresholds import alert_name, evaluate


class Observation(BaseModel):
    """One evaluation of the rules: when, and every finding (ok, warning or alert)."""

    at: datetime
    window_s: float
    findings: list[ThresholdFinding]

    @property
    def firing(self) -> list[ThresholdFinding]:
        return [f for f in self.findings if f.level == "alert"]


def alertmanager_notification(
    policy: Policy, obs: Observation, service: str, started_at: datetime
) -> dict[str, object]:
    """The Alertmanager v4 webhook body for the firing findings of ``obs`` (one group: ``service``).

    Raises:
        ValueError: nothing is firing (Alertmanager sends no empty notification).
    """
    firing = obs.firing
    if not firing:
        raise ValueError("no metric is past its alert threshold: nothing to notify")
    group_labels = {"service": service}
    alerts = []
    for f in firing:
        t = policy.thresholds[f.metric]
        name = alert_name(f.metric)
        labels = {"alertname": name, "service": service, "severity": t.severity.value}
        fingerprint = hashlib.sha256(json.dumps(labels, sort_keys=True).encode()).hexdigest()[:16]
        alerts.append(
            {
                "status": "firing",
                "labels": labels,
                "annotations": {
                    "summary": f"{name} on {service}: {f.metric} {f.value:.2f} {t.unit} "
                    f"(alert {'above' if t.worse == 'above' else 'below'} {t.alert:g} {t.unit})",
                    "value": f"{f.value:.4f}",
                    "metric": f.metric,
                },
                "startsAt": started_at.isoformat(),
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "",
                "fingerprint": fingerprint,
            }
        )
    return {
        "version": "4",
        "groupKey": "{}:" + "{" + ",".join(f'{k}="{v}"' for k, v in group_labels.items()) + "}",
        "truncatedAlerts": 0,
        "status": "firing",
        "receiver": "runbook-gateway",
        "groupLabels": group_labels,
        "commonLabels": {"service": service},
        "commonAnnotations": {},
        "externalURL": "",
        "alerts": alerts,
    }


async def observe(app: AppClient, policy: Policy, window_s: float) -> Observation:
    """Scrape, wait ``window_s``, scrape again: the policy's findings over that window."""
    before = await app.scrape()
    await asyncio.sleep(window_s)
    after = await app.scrape()
    readings = readings_between(before, after)
    return Observation(at=after.taken_at, window_s=window_s, findings=evaluate(policy, readings))


async def send(gateway_url: str, token: str, body: dict[str, object]) -> dict[str, object]:
    """POST the notification to the gateway's Alertmanager route; the gateway's answer.

    Raises:
        RuntimeError: the gateway did not accept it (the status and its reason).
    """
    async with httpx.AsyncClient(timeout=10) as client:
        resp = await client.post(
            f"{gateway_url}/hooks/alertmanager",
            json=body,
            headers={"Authorization": f"Bearer {token}"},
        )
    if resp.status_code >= 300:
        raise RuntimeError(f"the gateway refused the alert: {resp.status_code} {resp.text[:200]}")
    answer: dict[str, object] = resp.json()
    return answer
