"""Who may call which route: tokens, basic auth, and each sender's signature, through the app."""

from __future__ import annotations

import httpx

from runbook.clock import ManualClock
from runbook.gateway import GatewayConfig, create_app
from runbook.ledger import Ledger
from tests.gateway import payloads as p
from tests.gateway.conftest import PD_OLD_SECRET, PD_SECRET, T0


async def test_bearer_and_basic_accepted_wrong_or_missing_refused(
    client: httpx.AsyncClient,
) -> None:
    """Bearer and basic auth with the token pass; a wrong token is 403 and none is 401."""
    ok = await client.post("/hooks/alertmanager", content=p.alertmanager(), headers=p.bearer())
    ok_basic = await client.post("/hooks/generic", content=p.generic(), headers=p.basic())
    wrong = await client.post("/hooks/datadog", content=p.datadog(), headers=p.bearer("nope"))
    missing = await client.post("/hooks/generic", content=p.generic(),
                                headers={"content-type": "application/json"})  # fmt: skip
    assert (ok.status_code, ok_basic.status_code) == (202, 202)
    assert wrong.status_code == 403 and wrong.json()["error"] == "unauthorized"
    assert missing.status_code == 401 and "Authorization" in missing.json()["detail"]
    assert "nope" not in wrong.text


async def test_pagerduty_any_of_several_signatures_matches(
    ledger: Ledger, config: GatewayConfig, clock: ManualClock
) -> None:
    """During rotation PagerDuty sends two signatures; one matching secret is enough, none is 403."""
    rotated = GatewayConfig(token=config.token, pagerduty_secrets=config.pagerduty_secrets)
    app = create_app(ledger, rotated, clock=clock)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://g") as c:
        body = p.pagerduty()
        both = await c.post("/hooks/pagerduty", content=body,
                            headers=p.pagerduty_headers(body, PD_OLD_SECRET, PD_SECRET))  # fmt: skip
        old_only = await c.post("/hooks/pagerduty", content=body,
                                headers=p.pagerduty_headers(body, PD_OLD_SECRET, webhook_id="w2"))  # fmt: skip
        tampered = await c.post("/hooks/pagerduty", content=body + b" ",
                                headers=p.pagerduty_headers(body, webhook_id="w3"))  # fmt: skip
        unsigned = await c.post("/hooks/pagerduty", content=body,
                                headers={"content-type": "application/json"})  # fmt: skip
    await app.state.gateway.stop()
    assert both.status_code == 202
    assert old_only.status_code == 403 and tampered.status_code == 403
    assert unsigned.status_code == 401


async def test_sentry_signature(client: httpx.AsyncClient) -> None:
    """Sentry's HMAC over the body with the client secret is required."""
    body = p.sentry_metric_alert()
    good = await client.post("/hooks/sentry", content=body, headers=p.sentry_headers(body))
    bad = await client.post("/hooks/sentry", content=body,
                            headers=p.sentry_headers(body, secret="other", request_id="r2"))  # fmt: skip
    assert good.status_code == 202 and bad.status_code == 403


async def test_grafana_hmac_and_replay_window(
    client: httpx.AsyncClient, clock: ManualClock
) -> None:
    """Grafana's HMAC with a timestamp passes within 5 minutes and is refused outside the window."""
    body = p.grafana()
    now = str(int(T0.timestamp()))
    fresh = await client.post("/hooks/grafana", content=body, headers=p.grafana_headers(body, now))
    no_ts = await client.post("/hooks/grafana", content=p.grafana(fp="g2"),
                              headers=p.grafana_headers(p.grafana(fp="g2")))  # fmt: skip
    stale_ts = str(int(T0.timestamp()) - 301)
    stale = await client.post(
        "/hooks/grafana", content=body, headers=p.grafana_headers(body, stale_ts)
    )
    # the signature binds the timestamp: moving it without re-signing fails
    moved = p.grafana_headers(body, now) | {"x-grafana-alerting-timestamp": str(int(now) + 10)}
    forged = await client.post("/hooks/grafana", content=body, headers=moved)
    assert (fresh.status_code, no_ts.status_code) == (202, 202)
    assert stale.status_code == 403 and "replay window" in stale.json()["detail"]
    assert forged.status_code == 403


async def test_unconfigured_route_refuses_and_insecure_mode_accepts(
    ledger: Ledger, clock: ManualClock
) -> None:
    """Without a secret a route refuses everything (naming the variable); --insecure-no-auth accepts."""
    bare = create_app(ledger, GatewayConfig(), clock=clock)
    insecure = create_app(ledger, GatewayConfig(insecure_no_auth=True), clock=clock)
    headers = {"content-type": "application/json"}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=bare), base_url="http://g") as c:
        refused = await c.post("/hooks/sentry", content=p.sentry_metric_alert(),
                               headers=headers | {"sentry-hook-resource": "metric_alert"})  # fmt: skip
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=insecure), base_url="http://g"
    ) as c:
        accepted = await c.post("/hooks/generic", content=p.generic(), headers=headers)
    for app in (bare, insecure):
        await app.state.gateway.stop()
    assert refused.status_code == 403 and "RUNBOOK_SENTRY_CLIENT_SECRET" in refused.json()["detail"]
    assert accepted.status_code == 202


def test_config_reads_the_documented_environment_variables() -> None:
    """GatewayConfig.from_env takes secrets from the variables the issue names (several PD secrets)."""
    env = {"RUNBOOK_GATEWAY_TOKEN": "t", "RUNBOOK_PAGERDUTY_WEBHOOK_SECRET": "a, b",
           "RUNBOOK_SENTRY_CLIENT_SECRET": "s", "RUNBOOK_GRAFANA_HMAC_SECRET": "g"}  # fmt: skip
    config = GatewayConfig.from_env(env)
    assert config.token is not None and config.token.get_secret_value() == "t"
    assert [s.get_secret_value() for s in config.pagerduty_secrets] == ["a", "b"]
    assert config.missing_secrets() == []
    assert GatewayConfig.from_env({}).missing_secrets() == [
        "RUNBOOK_GATEWAY_TOKEN", "RUNBOOK_PAGERDUTY_WEBHOOK_SECRET",
        "RUNBOOK_SENTRY_CLIENT_SECRET", "RUNBOOK_GRAFANA_HMAC_SECRET",
    ]  # fmt: skip
