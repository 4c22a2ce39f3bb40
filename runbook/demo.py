"""``make demo`` until the drill lands: a bad deploy in the sandbox world becomes one incident.

It starts the sandbox world in-process, measures the app's error rate through its Prometheus
endpoint, injects the bad-deploy scenario, measures again, and, as an alerting system would, records
an Alertmanager-shaped alert in the ledger, which opens the incident. It returns the incident id.
"""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta

import httpx
from rich.console import Console

from runbook.clients.app import AppClient
from runbook.clock import ManualClock
from runbook.ledger import open_ledger
from runbook.metrics import readings_between
from runbook.models import Alert, AlertStatus, Severity
from runbook.sandbox.app import create_app
from runbook.sandbox.core import World
from runbook.sandbox.scenarios import apply_scenario

BASE = "http://sandbox"


async def _observe(world: World, console: Console) -> float:
    """Scrape the app, let a minute of (simulated) traffic pass, scrape again: the error rate in %."""
    clock = world.clock
    assert isinstance(clock, ManualClock)
    transport = httpx.ASGITransport(app=create_app(world))
    async with AppClient(
        f"{BASE}/app/api/health", f"{BASE}/app/metrics", transport=transport
    ) as app:
        before = await app.scrape()
        console.print(
            "sandbox: injecting scenario [bold]bad-deploy[/] (a new production deployment)"
        )
        apply_scenario(world, "bad-deploy")
        clock.advance(60)
        after = await app.scrape()
        health = await app.health()
    readings = readings_between(before, after)
    error_pct = (readings.error_rate or 0.0) * 100
    console.print(
        f"app: health {health.status_code}, error rate {error_pct:.2f} %, "
        f"p95 {readings.p95_ms or 0:.0f} ms over the last minute"
    )
    return error_pct


def run_demo(ledger_url: str | None, console: Console) -> int:
    """Run the demo and return the id of the incident it opened (or attached to)."""
    world = World(seed=7, clock=ManualClock())
    error_rate = asyncio.run(_observe(world, console))
    now = world.clock.now()
    body = {
        "version": "4",
        "status": "firing",
        "groupKey": '{}:{alertname="HighErrorRate"}',
        "alerts": [
            {
                "status": "firing",
                "labels": {"alertname": "HighErrorRate", "service": "web", "severity": "P2"},
                "annotations": {"summary": f"Error rate {error_rate:.2f} % (alert at 1 %)"},
                "startsAt": (now - timedelta(seconds=60)).isoformat(),
                "fingerprint": "demo-high-error-rate",
            }
        ],
    }
    alert = Alert(
        source="alertmanager",
        delivery_id=f"demo-{now.isoformat()}",
        fingerprint="demo-high-error-rate",
        dedup_key="alertmanager:HighErrorRate:web",
        status=AlertStatus.FIRING,
        summary=body["alerts"][0]["annotations"]["summary"],  # type: ignore[index]
        labels=body["alerts"][0]["labels"],  # type: ignore[index]
        started_at=now - timedelta(seconds=60),
        severity_hint=Severity.P2,
        service="web",
        raw_body=json.dumps(body).encode(),
    )
    with open_ledger(ledger_url) as ledger:
        outcome = ledger.record_alert(alert, title="High error rate on web", service="web")
    verb = "opened" if outcome.opened else "attached to"
    console.print(f"ledger: alert stored, {verb} INC-{outcome.incident_id}\n")
    assert outcome.incident_id is not None
    return outcome.incident_id
