"""Fixtures for the gateway tests: a ledger on SQLite, the app with known secrets, an HTTP client.

- ``ledger``: an empty SQLite ledger in tmp_path on a ManualClock (``clock``).
- ``config``: every secret set (TOKEN, PD_SECRET, SENTRY_SECRET, GRAFANA_SECRET).
- ``launches``: the incident ids the fake launcher was asked to launch.
- ``gateway_app`` / ``client``: the app and an httpx.AsyncClient over ASGI (base http://gateway).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime

import httpx
import pytest
from pydantic import SecretStr
from starlette.applications import Starlette

from runbook.clock import ManualClock
from runbook.gateway import GatewayConfig, create_app
from runbook.ledger import Ledger, open_ledger

TOKEN = "gw-token-123"
PD_SECRET = "pd-secret-new"
PD_OLD_SECRET = "pd-secret-old"
SENTRY_SECRET = "sentry-client-secret"
GRAFANA_SECRET = "grafana-hmac-secret"
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def clock() -> ManualClock:
    """The gateway's and the ledger's clock."""
    return ManualClock(T0)


@pytest.fixture
def ledger(tmp_path, clock: ManualClock) -> Iterator[Ledger]:  # type: ignore[no-untyped-def]
    """An empty SQLite ledger."""
    with open_ledger(f"sqlite:///{tmp_path / 'ledger.db'}", clock=clock) as opened:
        yield opened


@pytest.fixture
def config() -> GatewayConfig:
    """Every route's secret set; PagerDuty holds two secrets (rotation)."""
    return GatewayConfig(
        token=SecretStr(TOKEN),
        pagerduty_secrets=(SecretStr(PD_SECRET),),
        sentry_secret=SecretStr(SENTRY_SECRET),
        grafana_secret=SecretStr(GRAFANA_SECRET),
    )


@pytest.fixture
def launches() -> list[int]:
    """Incident ids the fake launcher launched, in order."""
    return []


@pytest.fixture
async def gateway_app(
    ledger: Ledger, config: GatewayConfig, clock: ManualClock, launches: list[int]
) -> AsyncIterator[Starlette]:
    """The gateway app with a fake launcher; stopped (queue drained) after the test."""

    async def launch(incident_id: int) -> None:
        launches.append(incident_id)

    app = create_app(ledger, config, launcher=launch, clock=clock)
    app.state.gateway.dispatcher.poll_s = 0.05
    yield app
    await app.state.gateway.stop()


@pytest.fixture
async def client(gateway_app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client for the in-process gateway."""
    transport = httpx.ASGITransport(app=gateway_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as c:
        yield c
