"""The product app: the client's health/scrape semantics on fakes, the sandbox app, the block."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import httpx
import pytest
from prefect.testing.standard_test_suites import BlockStandardTestSuite
from pydantic import SecretStr, ValidationError

from blocks.app import AppEndpoint
from runbook.clients.app import AppClient
from runbook.clock import ManualClock
from runbook.errors import AppPermanentError, AppTransientError
from runbook.metrics import readings_between
from runbook.sandbox import vercel
from runbook.sandbox.app import create_app
from runbook.sandbox.core import DEFAULT_TOKEN, World
from runbook.sandbox.scenarios import apply_scenario
from tests.conftest import sandbox_url

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
HEALTH = "https://shop.example/api/health"
METRICS = "https://shop.example/metrics"
EXPOSITION = 'http_requests_total{status="2xx"} 10\n'


@pytest.fixture
def world() -> World:
    """A seeded world on a manual clock, so scrape windows are exact."""
    return World(token=DEFAULT_TOKEN, seed=1234, clock=ManualClock(T0))


@pytest.fixture
def transport(sandbox_transport: httpx.ASGITransport) -> httpx.ASGITransport:
    """The shared in-process sandbox (conftest), serving this module's ``world``."""
    return sandbox_transport


@pytest.fixture
def app_client(world: World, transport: httpx.ASGITransport) -> AppClient:
    return AppClient(
        f"{sandbox_url('app')}/api/health",
        f"{sandbox_url('app')}/metrics",
        transport=transport,
        clock=world.clock,
    )


# --- client semantics on MockTransport fakes -----------------------------------------------------


class FakeApp:
    """Answers health and metrics from scripted responses (then 200s); records every request."""

    def __init__(self, *script: httpx.Response | Exception) -> None:
        self.script = list(script)
        self.requests: list[httpx.Request] = []
        self.times: list[float] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        self.times.append(time.monotonic())
        if self.script:
            step = self.script.pop(0)
            if isinstance(step, Exception):
                raise step
            return step
        if request.url.path == "/metrics":
            return httpx.Response(200, text=EXPOSITION)
        return httpx.Response(200, json={"status": "ok"})

    def client(self, **kwargs) -> AppClient:  # type: ignore[no-untyped-def]
        return AppClient(HEALTH, METRICS, transport=httpx.MockTransport(self), **kwargs)


async def test_healthy_answer_is_ok() -> None:
    """A 200 {"status": "ok"} is an ok result with its status code, body and latency."""
    fake = FakeApp()
    async with fake.client() as c:
        check = await c.health()
    assert check.ok and check.status_code == 200 and check.status == "ok"
    assert check.body == {"status": "ok"}
    assert check.latency_ms >= 0 and check.checked_at is not None


async def test_503_is_a_result_not_an_exception() -> None:
    """A 503 "degraded" comes back as ok=False, at once, without retries."""
    fake = FakeApp(httpx.Response(503, json={"status": "degraded", "checks": {"db": "slow"}}))
    async with fake.client() as c:
        check = await c.health()
    assert not check.ok and check.status_code == 503 and check.status == "degraded"
    assert len(fake.requests) == 1


async def test_200_that_says_degraded_is_not_ok() -> None:
    """A 200 whose body says "degraded" is not ok; a non-JSON 200 is ok with its text."""
    fake = FakeApp(
        httpx.Response(200, json={"status": "degraded"}),
        httpx.Response(200, text="OK"),
    )
    async with fake.client() as c:
        degraded = await c.health()
        plain = await c.health()
    assert not degraded.ok
    assert plain.ok and plain.body == "OK"


async def test_no_answer_is_transient() -> None:
    """A refused connection or a timeout raises AppTransientError."""
    refused = FakeApp(*[httpx.ConnectError("refused")] * 3)
    async with refused.client(max_retries=0) as c:
        with pytest.raises(AppTransientError, match="cannot reach app"):
            await c.health()

    async def slow(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(1)
        return httpx.Response(200)

    c = AppClient(HEALTH, timeout=0.05, transport=httpx.MockTransport(slow), max_retries=0)
    async with c:
        with pytest.raises(AppTransientError, match="timeout"):
            await c.health()


async def test_scrape_parses_and_stamps_the_callers_clock() -> None:
    """A scrape is parsed into samples and stamped with the client's clock."""
    clock = ManualClock(T0)
    fake = FakeApp()
    async with fake.client(clock=clock) as c:
        snap = await c.scrape()
        later = await c.scrape(taken_at=datetime(2030, 1, 1, tzinfo=UTC))
    assert snap.taken_at == T0 and later.taken_at.year == 2030
    assert snap.total("http_requests_total", status="2xx") == 10


async def test_scrape_429_honours_retry_after() -> None:
    """A 429 on the metrics page is retried after its Retry-After, then succeeds."""
    fake = FakeApp(httpx.Response(429, text="slow down", headers={"retry-after": "0.3"}))
    async with fake.client() as c:
        snap = await c.scrape()
    assert snap.total("http_requests_total") == 10
    assert fake.times[1] - fake.times[0] >= 0.29


async def test_scrape_5xx_retried_then_transient() -> None:
    """A metrics page that keeps answering 502 raises AppTransientError after the retries."""
    fake = FakeApp(*[httpx.Response(502, text="bad gateway")] * 4)
    async with fake.client(max_retries=1) as c:
        with pytest.raises(AppTransientError) as info:
            await c.scrape()
    assert len(fake.requests) == 2 and info.value.status_code == 502


async def test_scrape_4xx_and_garbage_are_permanent() -> None:
    """A 404 raises AppPermanentError with the app's text; an HTML page says to check the URL."""
    fake = FakeApp(
        httpx.Response(404, text="no such page"),
        httpx.Response(200, text="<html><body>login</body></html>"),
    )
    async with fake.client() as c:
        with pytest.raises(AppPermanentError, match="no such page"):
            await c.scrape()
        with pytest.raises(AppPermanentError, match="metrics_url"):
            await c.scrape()
    assert len(fake.requests) == 2


async def test_scrape_without_metrics_url_is_permanent() -> None:
    """Scraping an app configured without metrics_url says to set it."""
    async with AppClient(HEALTH, transport=httpx.MockTransport(FakeApp())) as c:
        with pytest.raises(AppPermanentError, match="metrics_url"):
            await c.scrape()


async def test_bearer_token_is_sent_and_never_in_errors() -> None:
    """The token goes in the Authorization header of both calls and never into an error message."""
    fake = FakeApp(httpx.Response(200, json={"status": "ok"}), httpx.Response(401, text="nope"))
    async with fake.client(token="s3cret-token") as c:
        await c.health()
        with pytest.raises(AppPermanentError) as info:
            await c.scrape()
    assert [r.headers["authorization"] for r in fake.requests] == ["Bearer s3cret-token"] * 2
    assert "s3cret-token" not in str(info.value)


def test_health_url_must_be_http() -> None:
    """A health URL that is not http(s) is refused at once."""
    with pytest.raises(AppPermanentError, match="health_url"):
        AppClient("shop.example/api/health")


# --- against the sandbox -------------------------------------------------------------------------


async def test_sandbox_health_is_public_and_ok(app_client: AppClient, world: World) -> None:
    """The sandbox app answers 200 ok without any credential, naming the production deployment."""
    async with app_client:
        check = await app_client.health()
    assert check.ok and check.status_code == 200
    assert check.body["checks"] == {
        "deployment": "ok",
        "database": "ok",
        "auth": "ok",
        "edge_functions": "ok",
    }
    assert check.body["deployment"] == vercel.current_production(world).uid  # type: ignore[union-attr]
    [req] = world.requests_for("app", "/api/health")
    assert req.status == 200 and "authorization" not in req.headers


async def test_sandbox_baseline_metrics(app_client: AppClient, world: World) -> None:
    """A healthy minute: 500 req/s, errors under 0.1 %, p95 near 180 ms, db at 20 %, edge fine."""
    clock: ManualClock = world.clock  # type: ignore[assignment]
    async with app_client:
        before = await app_client.scrape()
        clock.advance(60)
        after = await app_client.scrape()
    r = readings_between(before, after)
    assert r.requests == 30000
    assert r.throughput_rps == pytest.approx(500)
    assert r.error_rate is not None and r.error_rate < 0.001
    assert r.availability is not None and r.availability > 0.999
    assert r.p95_ms is not None and 150 <= r.p95_ms <= 220
    assert r.db_connection_ratio == pytest.approx(0.2)
    assert r.edge_function_success is not None and r.edge_function_success > 0.99
    assert after.has("http_request_duration_seconds_sum")
    assert {s.labels["outcome"] for s in after.select("edge_function_invocations_total")} == {
        "success",
        "error",
        "timeout",
    }
    assert len(world.requests_for("app", "/metrics")) == 2


async def test_sandbox_traffic_is_deterministic(world: World) -> None:
    """Two worlds read at the same clock times expose the same counters."""
    texts = []
    for _ in range(2):
        w = World(token=DEFAULT_TOKEN, seed=1, clock=ManualClock(T0))
        async with AppClient(
            f"{sandbox_url('app')}/api/health",
            f"{sandbox_url('app')}/metrics",
            transport=httpx.ASGITransport(app=create_app(w)),
            clock=w.clock,
        ) as c:
            w.clock.advance(37)  # type: ignore[attr-defined]
            texts.append((await c.scrape()).samples)
    assert texts[0] == texts[1]


async def test_sandbox_high_error_rate(app_client: AppClient, world: World) -> None:
    """The high-error-rate scenario shows ~3 % errors split by type, and a 503 degraded health."""
    clock: ManualClock = world.clock  # type: ignore[assignment]
    apply_scenario(world, "high-error-rate")
    async with app_client:
        before = await app_client.scrape()
        clock.advance(100)
        after = await app_client.scrape()
        check = await app_client.health()
    r = readings_between(before, after)
    assert r.error_rate == pytest.approx(0.0305, abs=0.002)
    upstream = after.total("http_request_errors_total", type="UpstreamTimeout")
    type_errors = after.total("http_request_errors_total", type="TypeError")
    assert upstream / type_errors == pytest.approx(70 / 30, rel=0.05)
    assert not check.ok and check.status_code == 503 and check.status == "degraded"


async def test_sandbox_db_degradation_without_a_database(
    app_client: AppClient, world: World
) -> None:
    """Database degradation (no real backend) raises p95 past 2 s and the connection ratio to 0.9."""
    clock: ManualClock = world.clock  # type: ignore[assignment]
    apply_scenario(world, "db-degradation")
    async with app_client:
        before = await app_client.scrape()
        clock.advance(60)
        after = await app_client.scrape()
        check = await app_client.health()
    r = readings_between(before, after)
    assert r.p95_ms is not None and 2000 <= r.p95_ms <= 3000
    assert r.db_connection_ratio == pytest.approx(0.9)
    assert check.status_code == 503 and check.body["checks"]["database"] == "degraded"


# --- the block -----------------------------------------------------------------------------------


async def test_block_builds_a_working_client(transport: httpx.ASGITransport) -> None:
    """AppEndpoint.get_client probes the sandbox app and scrapes it."""
    block = AppEndpoint(
        health_url=f"{sandbox_url('app')}/api/health",
        metrics_url=f"{sandbox_url('app')}/metrics",
        bearer_token=SecretStr("ignored-by-public-app"),
    )
    async with block.get_client(transport=transport) as c:
        check = await c.health()
        snap = await c.scrape()
    assert check.ok and snap.has("db_connections_max")
    assert "ignored-by-public-app" not in repr(block)


def test_block_validates_its_fields() -> None:
    """Non-http URLs and unknown metrics kinds are refused; an empty metrics_url means none."""
    with pytest.raises(ValidationError, match="health_url"):
        AppEndpoint(health_url="example.com/health")
    with pytest.raises(ValidationError, match="metrics_url"):
        AppEndpoint(health_url=HEALTH, metrics_url="ftp://example.com/metrics")
    with pytest.raises(ValidationError):
        AppEndpoint(health_url=HEALTH, metrics_kind="json")  # type: ignore[arg-type]
    block = AppEndpoint(health_url=HEALTH, metrics_url=" ")
    assert block.metrics_url is None and block.metrics_kind == "exposition"
    assert AppEndpoint.get_block_type_slug() == "app-endpoint"


class TestAppEndpointStandardChecks(BlockStandardTestSuite):
    """Prefect's standard block checks (description, docs URL, field descriptions, code example)."""

    @pytest.fixture
    def block(self):  # type: ignore[no-untyped-def]
        return AppEndpoint

    def test_has_a_valid_image(self, block) -> None:  # type: ignore[no-untyped-def]
        """Overridden: no internet here, so the logo URL's form is checked, not its pixels."""
        assert str(block._logo_url).startswith("https://")
