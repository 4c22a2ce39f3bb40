"""The app end to end over ASGI: status codes, dedup, resolution, flapping, durability, metrics."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from runbook.clock import ManualClock
from runbook.errors import LedgerUnavailableError
from runbook.gateway import GatewayConfig, create_app
from runbook.ledger import Ledger
from runbook.models import IncidentStatus
from tests.gateway import payloads as p


async def test_alert_is_stored_before_202_and_opens_one_incident(
    client: httpx.AsyncClient, ledger: Ledger
) -> None:
    """A firing alert is in the ledger (raw body too) when the 202 arrives, with one incident."""
    body = p.alertmanager(p.am_alert(fp="a"), p.am_alert(fp="b"))
    response = await client.post("/hooks/alertmanager", content=body, headers=p.bearer())
    assert response.status_code == 202
    (incident,) = ledger.list_incidents()
    assert response.json()["opened"] == [incident.id]
    stored = ledger.alerts_for(incident.id)
    assert [a.fingerprint for a in stored] == ["a", "b"]
    assert stored[0].raw_body == body and incident.alert_count == 2
    assert incident.severity.value == "P1" and incident.title == "HighErrorRate on checkout"


async def test_redelivery_changes_nothing_and_same_key_attaches(
    client: httpx.AsyncClient, ledger: Ledger
) -> None:
    """The same delivery again is a 200 duplicate; a new alert with the same key attaches."""
    first = await client.post("/hooks/generic", content=p.generic(), headers=p.bearer())
    again = await client.post("/hooks/generic", content=p.generic(), headers=p.bearer())
    other = await client.post(
        "/hooks/generic", content=p.generic(labels={"pod": "b"}), headers=p.bearer()
    )
    assert (first.status_code, again.status_code, other.status_code) == (202, 200, 202)
    assert again.json()["status"] == "duplicate"
    (incident,) = ledger.list_incidents()
    assert incident.alert_count == 2 and len(ledger.alerts_for(incident.id)) == 2


async def test_pagerduty_retry_with_same_webhook_id_is_a_duplicate(
    client: httpx.AsyncClient, ledger: Ledger
) -> None:
    """PagerDuty's retry of one webhook (same X-Webhook-Id) stores nothing more."""
    body = p.pagerduty()
    for _ in range(3):
        await client.post("/hooks/pagerduty", content=body, headers=p.pagerduty_headers(body))
    (incident,) = ledger.list_incidents()
    assert len(ledger.alerts_for(incident.id)) == 1


async def test_resolved_alerts_attach_and_policy_waits_for_verification(
    client: httpx.AsyncClient, ledger: Ledger, gateway_app
) -> None:  # type: ignore[no-untyped-def]
    """Resolved notifications attach; once all resolved the incident waits (default policy)."""
    await client.post("/hooks/alertmanager", headers=p.bearer(),
                      content=p.alertmanager(p.am_alert(fp="a"), p.am_alert(fp="b")))  # fmt: skip
    await client.post("/hooks/alertmanager", headers=p.bearer(),
                      content=p.alertmanager(p.am_alert(status="resolved", fp="a")))  # fmt: skip
    (incident,) = ledger.list_incidents()
    kinds = [e.kind for e in ledger.timeline(incident.id)]
    assert "alert_resolved" in kinds and "alerts_resolved" not in kinds  # b still fires
    await client.post("/hooks/alertmanager", headers=p.bearer(),
                      content=p.alertmanager(p.am_alert(status="resolved", fp="b")))  # fmt: skip
    incident = ledger.get_incident(incident.id)
    assert incident.status == IncidentStatus.DETECTED
    assert [e.kind for e in ledger.timeline(incident.id)].count("alerts_resolved") == 1


async def test_resolved_without_open_incident_opens_nothing(
    client: httpx.AsyncClient, ledger: Ledger
) -> None:
    """A resolved alert for an unknown key is stored but opens no incident."""
    response = await client.post(
        "/hooks/generic", content=p.generic(status="resolved"), headers=p.bearer()
    )
    assert response.status_code == 202 and ledger.list_incidents() == []


async def test_auto_resolve_policy_and_flapping(
    ledger: Ledger, clock: ManualClock, config: GatewayConfig
) -> None:
    """With auto-resolve on, all-resolved resolves the incident; a flapping key stays open instead."""
    app = create_app(ledger, GatewayConfig(token=config.token, auto_resolve=True), clock=clock)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://g") as c:
        await c.post("/hooks/generic", content=p.generic(key="calm"), headers=p.bearer())
        await c.post(
            "/hooks/generic", content=p.generic(key="calm", status="resolved"), headers=p.bearer()
        )
        for i in range(4):  # firing/resolved/firing/resolved within the window
            status = "firing" if i % 2 == 0 else "resolved"
            await c.post("/hooks/generic", headers=p.bearer(),
                         content=p.generic(key="flappy", status=status, started_at=f"2026-03-01T12:0{i}:00Z"))  # fmt: skip
    await app.state.gateway.stop()
    calm, flappy = sorted(ledger.list_incidents(), key=lambda i: i.dedup_key)
    assert calm.status == IncidentStatus.RESOLVED
    assert flappy.is_open and flappy.dedup_key == "generic:flappy"
    flappy_alerts = ledger.alerts_for(flappy.id)
    assert flappy_alerts[-1].labels.get("flapping") == "true"
    assert len([i for i in ledger.list_incidents() if i.dedup_key == "generic:flappy"]) == 1


@pytest.mark.parametrize(
    ("headers", "body", "status"),
    [
        ({"content-type": "text/plain"}, b"{}", 415),
        ({}, b"x" * (1024 * 1024 + 1), 413),
        ({}, b"{broken", 400),
        ({}, b'{"key": 5}', 400),
        ({}, "{\"key\": \"caf\xe9\"}".encode("latin-1"), 400),
    ],
)  # fmt: skip
async def test_status_codes_for_bad_requests(
    client: httpx.AsyncClient, ledger: Ledger, headers: dict[str, str], body: bytes, status: int
) -> None:
    """Wrong type is 415, too large 413, malformed 400 with a reason; nothing is opened."""
    response = await client.post("/hooks/generic", content=body, headers=p.bearer() | headers)
    assert response.status_code == status and response.json()["detail"]
    assert ledger.list_incidents() == []
    if status == 400:
        (letter,) = ledger.dead_letters()
        assert letter.raw_body == body and "authorization" not in letter.headers


async def test_ledger_down_is_503_and_no_2xx_alert_is_lost(
    client: httpx.AsyncClient, ledger: Ledger, monkeypatch: pytest.MonkeyPatch, gateway_app
) -> None:  # type: ignore[no-untyped-def]
    """While the ledger fails every other commit, each 2xx alert is stored and the rest got 503."""
    real = ledger.record_alerts
    calls = {"n": 0}

    def flaky(items):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] % 2 == 0:
            raise LedgerUnavailableError("ledger at sqlite:///x is down")
        return real(items)

    monkeypatch.setattr(ledger, "record_alerts", flaky)
    gateway_app.state.gateway.committer.batch_max = 5  # many commits, so some fail
    bodies = [p.generic(key=f"k{i % 7}", delivery_id=f"d{i}") for i in range(60)]
    responses = await asyncio.gather(
        *(client.post("/hooks/generic", content=b, headers=p.bearer()) for b in bodies)
    )
    codes = {r.status_code for r in responses}
    assert codes <= {202, 503} and 503 in codes
    assert all(r.headers.get("retry-after") for r in responses if r.status_code == 503)
    accepted = {
        json.loads(b)["delivery_id"]
        for b, r in zip(bodies, responses, strict=True)
        if r.status_code == 202
    }
    stored = {a.delivery_id for i in ledger.list_incidents() for a in ledger.alerts_for(i.id)}
    assert accepted and accepted <= stored


async def test_opened_incident_is_launched_once(
    client: httpx.AsyncClient, launches: list[int], gateway_app
) -> None:  # type: ignore[no-untyped-def]
    """Each opened incident is launched by the dispatcher exactly once."""
    await client.post("/hooks/generic", content=p.generic(key="a"), headers=p.bearer())
    await client.post(
        "/hooks/generic", content=p.generic(key="a", labels={"x": "1"}), headers=p.bearer()
    )
    await client.post("/hooks/generic", content=p.generic(key="b"), headers=p.bearer())
    for _ in range(100):
        if len(launches) >= 2:
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.1)
    assert sorted(launches) == [1, 2]


async def test_healthz_and_metrics(client: httpx.AsyncClient) -> None:
    """/healthz answers ok and /metrics counts received, duplicates, opened and the dedup ratio."""
    await client.post("/hooks/generic", content=p.generic(), headers=p.bearer())
    await client.post("/hooks/generic", content=p.generic(), headers=p.bearer())
    await client.post("/hooks/generic", content=b"{", headers=p.bearer())
    health = await client.get("/healthz")
    text = (await client.get("/metrics")).text
    assert health.status_code == 200 and health.json()["status"] == "ok"
    assert 'runbook_gateway_alerts_received_total{outcome="stored",source="generic"} 1.0' in text
    assert 'runbook_gateway_duplicates_dropped_total{source="generic"} 1.0' in text
    assert 'runbook_gateway_incidents_opened_total{source="generic"} 1.0' in text
    assert "runbook_gateway_dedup_ratio 0.5" in text
    assert (
        "runbook_gateway_outbox_pending" in text
        and "runbook_gateway_request_seconds_bucket" in text
    )


async def test_hooks_take_the_plain_asgi_path_and_other_methods_get_405(
    client: httpx.AsyncClient, ledger: Ledger
) -> None:
    """POST on a hook is answered with JSON and its length (503 keeps Retry-After); GET on a hook
    is 405 and unknown paths 404, from the Starlette routes; header names are matched in any case."""
    response = await client.post(
        "/hooks/generic", content=p.generic(key="a"),
        headers={"AUTHORIZATION": p.bearer()["authorization"], "Content-Type": "application/json",
                 "Idempotency-Key": "abc"},
    )  # fmt: skip
    assert response.status_code == 202 and response.headers["content-type"] == "application/json"
    assert int(response.headers["content-length"]) == len(response.content)
    assert (await client.get("/hooks/generic")).status_code == 405
    assert (await client.post("/hooks/nosuch", content=b"{}")).status_code == 404
    assert len(ledger.list_incidents()) == 1
