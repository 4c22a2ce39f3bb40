"""Vercel: the client's error mapping on fakes, every operation against the sandbox, the block."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from prefect.testing.standard_test_suites import BlockStandardTestSuite
from pydantic import SecretStr, ValidationError

from blocks.vercel import VercelProject
from runbook.clients.app import AppClient
from runbook.clients.vercel import Deployment, VercelClient
from runbook.clock import ManualClock
from runbook.errors import VercelPermanentError, VercelTransientError
from runbook.metrics import error_rate
from runbook.sandbox import vercel as sandbox_vercel
from runbook.sandbox.core import DEFAULT_TOKEN, FaultRule, World
from runbook.sandbox.scenarios import apply_scenario
from tests.conftest import sandbox_url

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
BASE = "https://api.vercel.test"
PROJECT = sandbox_vercel.PROJECT_ID


# --- the sandbox, in-process ---------------------------------------------------------------------


@pytest.fixture
def world() -> World:
    """A seeded world on a manual clock, so scrape windows are exact."""
    return World(token=DEFAULT_TOKEN, seed=1234, clock=ManualClock(T0))


@pytest.fixture
def transport(sandbox_transport: httpx.ASGITransport) -> httpx.ASGITransport:
    """The shared in-process sandbox (conftest), serving this module's ``world``."""
    return sandbox_transport


@pytest.fixture
def client(transport: httpx.ASGITransport) -> VercelClient:
    return VercelClient(sandbox_url("vercel"), DEFAULT_TOKEN, transport=transport)


# --- error mapping on MockTransport fakes --------------------------------------------------------


class FakeVercel:
    """A stateful fake: answers a scripted list of responses, then 200s; records every request."""

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
        return httpx.Response(200, json={"id": "prj_1", "name": "web", "targets": {}})

    def client(self, **kwargs) -> VercelClient:  # type: ignore[no-untyped-def]
        return VercelClient(BASE, "tok_secret_123", transport=httpx.MockTransport(self), **kwargs)


def _err(status: int, code: str, message: str, **headers: str) -> httpx.Response:
    return httpx.Response(
        status, json={"error": {"code": code, "message": message}}, headers=headers
    )


async def test_429_retry_after_is_honoured() -> None:
    """A 429 with Retry-After is retried after at least that long, then succeeds."""
    fake = FakeVercel(
        _err(429, "too_many_requests", "Rate limit exceeded", **{"retry-after": "0.3"})
    )
    async with fake.client() as c:
        project = await c.get_project("web")
    assert project.id == "prj_1"
    assert len(fake.requests) == 2
    assert fake.times[1] - fake.times[0] >= 0.29


async def test_5xx_is_retried_then_raised_as_transient() -> None:
    """A persistent 503 is retried max_retries times, then raised as VercelTransientError."""
    fake = FakeVercel(*[_err(503, "service_unavailable", "try later")] * 5)
    async with fake.client(max_retries=1) as c:
        with pytest.raises(VercelTransientError) as info:
            await c.get_project("web")
    assert len(fake.requests) == 2
    assert info.value.status_code == 503
    assert "try later" in str(info.value)


async def test_4xx_is_permanent_with_the_vendor_message_and_a_hint() -> None:
    """A 404 fails at once with Vercel's message and what to check; the token never appears."""
    fake = FakeVercel(_err(404, "not_found", "The deployment could not be found."))
    async with fake.client() as c:
        with pytest.raises(VercelPermanentError) as info:
            await c.get_deployment("dpl_nope")
    assert len(fake.requests) == 1
    text = str(info.value)
    assert "The deployment could not be found." in text
    assert "deployment id" in text
    assert "tok_secret_123" not in text
    assert info.value.vendor_message == "The deployment could not be found."


async def test_invalid_token_says_to_check_the_token() -> None:
    """A 403 invalidToken answer is permanent and points at VercelProject.token."""
    fake = FakeVercel(
        httpx.Response(
            403,
            json={
                "error": {"code": "forbidden", "message": "Not authorized", "invalidToken": True}
            },
        )
    )
    async with fake.client() as c:
        with pytest.raises(VercelPermanentError, match=r"Not authorized.*token"):
            await c.list_deployments("prj_1")


async def test_timeout_is_transient() -> None:
    """An answer slower than the timeout raises VercelTransientError."""

    async def slow(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(1)
        return httpx.Response(200, json={})

    c = VercelClient(BASE, "tok", timeout=0.05, transport=httpx.MockTransport(slow), max_retries=0)
    async with c:
        with pytest.raises(VercelTransientError, match="timeout"):
            await c.get_project("web")


async def test_connection_error_is_transient() -> None:
    """A refused connection raises VercelTransientError after the retries."""
    fake = FakeVercel(*[httpx.ConnectError("refused")] * 3)
    async with fake.client(max_retries=1) as c:
        with pytest.raises(VercelTransientError, match="cannot reach vercel"):
            await c.get_project("web")


async def test_team_id_is_sent_on_every_call() -> None:
    """With team_id set, every call carries teamId; the token goes only in the Authorization header."""
    fake = FakeVercel(
        httpx.Response(200, json={"deployments": []}),
        httpx.Response(201),
        httpx.Response(201),
    )
    async with fake.client(team_id="team_abc") as c:
        await c.list_deployments("prj_1")
        await c.rollback("prj_1", "dpl_1", "bad deploy")
        await c.promote("prj_1", "dpl_1")
        await c.get_project("prj_1")
    assert [r.url.params.get("teamId") for r in fake.requests] == ["team_abc"] * 4
    assert all(r.headers["authorization"] == "Bearer tok_secret_123" for r in fake.requests)
    assert fake.requests[1].url.params["description"] == "bad deploy"


def test_deployment_model_normalizes_both_shapes() -> None:
    """List items (uid, state, created ms) and get answers (id, readyState, createdAt) read alike."""
    listed = Deployment.model_validate(
        {"uid": "dpl_1", "state": "READY", "created": 1_700_000_000_000, "extra": 1}
    )
    got = Deployment.model_validate(
        {"id": "dpl_1", "readyState": "READY", "createdAt": 1_700_000_000_000}
    )
    assert listed.uid == got.uid == "dpl_1"
    assert listed.state == got.state == "READY"
    assert listed.created == got.created == datetime.fromtimestamp(1_700_000_000, tz=UTC)


def test_client_needs_a_token() -> None:
    """A client without a token fails at once with what to set."""
    with pytest.raises(VercelPermanentError, match="token"):
        VercelClient(BASE, "")


# --- every operation against the sandbox ---------------------------------------------------------


async def test_list_deployments(client: VercelClient, world: World) -> None:
    """Three READY production deployments, newest first; only the older two are rollback candidates."""
    async with client:
        deps = await client.list_deployments(PROJECT)
    assert len(deps) == 3
    assert [d.created for d in deps] == sorted((d.created for d in deps), reverse=True)
    assert deps[0].created == T0 - timedelta(days=1)
    assert [d.is_rollback_candidate for d in deps] == [False, True, True]
    assert all(d.state == "READY" and d.target == "production" for d in deps)
    assert all(d.url.startswith("web-") and d.url.endswith(".vercel.app") for d in deps)
    assert deps[0].commit_sha and deps[0].meta["githubCommitRef"] == "main"
    [req] = world.requests_for("vercel", "/v6/deployments")
    assert "projectId=prj_sandbox" in req.query and "state=READY" in req.query
    assert req.headers["authorization"] == "***"


async def test_v7_lists_like_v6(transport: httpx.ASGITransport) -> None:
    """/v7/deployments answers the same list as /v6."""
    headers = {"Authorization": f"Bearer {DEFAULT_TOKEN}"}
    async with httpx.AsyncClient(transport=transport, base_url=sandbox_url("vercel")) as http:
        v6 = (
            await http.get("/v6/deployments", params={"projectId": PROJECT}, headers=headers)
        ).json()
        v7 = (
            await http.get("/v7/deployments", params={"projectId": PROJECT}, headers=headers)
        ).json()
    assert v6 == v7
    assert v6["pagination"]["count"] == 3


async def test_list_filters_since_until_and_limit(client: VercelClient) -> None:
    """since/until bound the creation time and limit caps the count."""
    async with client:
        recent = await client.list_deployments(PROJECT, since=T0 - timedelta(days=2, hours=1))
        older = await client.list_deployments(PROJECT, until=T0 - timedelta(days=1, hours=1))
        one = await client.list_deployments(PROJECT, limit=1)
        previews = await client.list_deployments(PROJECT, target="preview")
    assert len(recent) == 2 and len(older) == 2 and len(one) == 1 and previews == []


async def test_get_deployment_by_id_and_by_url(client: VercelClient) -> None:
    """A deployment reads the same by its id and by its hostname."""
    async with client:
        [newest, *_] = await client.list_deployments(PROJECT)
        by_id = await client.get_deployment(newest.uid)
        by_url = await client.get_deployment(f"https://{newest.url}")
    assert by_id.uid == by_url.uid == newest.uid
    assert by_id.created == newest.created and by_id.state == "READY"


async def test_get_project_reports_production(client: VercelClient) -> None:
    """The project's production target is the newest deployment, and it is not rolled back."""
    async with client:
        [newest, *_] = await client.list_deployments(PROJECT)
        project = await client.get_project(PROJECT)
        by_name = await client.get_project("web")
    assert project.production_deployment_id == newest.uid == by_name.production_deployment_id
    assert project.production_url == newest.url
    assert not project.rolled_back


async def test_rollback_then_promote(client: VercelClient, world: World) -> None:
    """A rollback moves production and marks the project rolled back; a promote moves it back."""
    async with client:
        newest, previous, _ = await client.list_deployments(PROJECT)
        await client.rollback(PROJECT, previous.uid, "error spike after deploy")
        after_rollback = await client.get_project(PROJECT)
        await client.rollback(PROJECT, previous.uid, "retried")  # idempotent: already current
        await client.promote(PROJECT, newest.uid)
        after_promote = await client.get_project(PROJECT)
    assert after_rollback.production_deployment_id == previous.uid
    assert after_rollback.last_rollback_target == {
        "fromDeploymentId": newest.uid,
        "toDeploymentId": previous.uid,
        "jobStatus": "succeeded",
        "requestedAt": int(T0.timestamp() * 1000),
        "type": "rollback",
        "description": "error spike after deploy",
    }
    assert after_promote.production_deployment_id == newest.uid
    assert not after_promote.rolled_back
    assert sandbox_vercel.current_production(world).uid == newest.uid  # type: ignore[union-attr]
    [first, _] = world.requests_for("vercel", "/rollback/")
    assert first.method == "POST" and first.status == 201
    assert "description=error+spike" in first.query or "description=error%20spike" in first.query


async def test_last_good_deployment(client: VercelClient, world: World) -> None:
    """The last good deployment is the newest candidate created before the incident: not the bad one."""
    apply_scenario(world, "bad-deploy")
    async with client:
        good_before_now = await client.last_good_deployment(PROJECT, T0 + timedelta(seconds=1))
        project = await client.get_project(PROJECT)
        nothing = await client.last_good_deployment(PROJECT, T0 - timedelta(days=5))
    assert project.production_deployment_id.startswith("dpl_bad")  # type: ignore[union-attr]
    assert good_before_now is not None
    assert good_before_now.created == T0 - timedelta(days=1)
    assert nothing is None


async def test_rollback_restores_the_app_after_the_next_scrape_window(
    client: VercelClient, world: World, transport: httpx.ASGITransport
) -> None:
    """After a bad deploy the app fails >1 %; after rolling back, the next window is under 0.1 %."""
    clock: ManualClock = world.clock  # type: ignore[assignment]
    app = AppClient(
        f"{sandbox_url('app')}/api/health",
        f"{sandbox_url('app')}/metrics",
        transport=transport,
        clock=clock,
    )
    bad = apply_scenario(world, "bad-deploy")["changes"]
    async with client, app:
        s0 = await app.scrape()
        clock.advance(60)
        s1 = await app.scrape()
        target = await client.last_good_deployment(PROJECT, T0)
        assert target is not None
        await client.rollback(PROJECT, target.uid, "bad deploy")
        project = await client.get_project(PROJECT)
        s2 = await app.scrape()
        clock.advance(60)
        s3 = await app.scrape()
    assert target.uid == bad["previous"]
    assert project.production_deployment_id == bad["previous"]
    assert error_rate(s0, s1) > 0.01  # type: ignore[operator]
    assert error_rate(s2, s3) < 0.001  # type: ignore[operator]


async def test_wrong_token_gets_vercels_403(transport: httpx.ASGITransport) -> None:
    """A wrong token gets Vercel's own 403 body, and the client raises a permanent error."""
    async with httpx.AsyncClient(transport=transport, base_url=sandbox_url("vercel")) as http:
        r = await http.get("/v9/projects/web", headers={"Authorization": "Bearer wrong"})
        missing = await http.post(f"/v1/projects/{PROJECT}/rollback/dpl_x")
    assert r.status_code == 403 == missing.status_code
    assert r.json() == {
        "error": {"code": "forbidden", "message": "Not authorized", "invalidToken": True}
    }
    c = VercelClient(sandbox_url("vercel"), "wrong", transport=transport)
    async with c:
        with pytest.raises(VercelPermanentError, match="Not authorized"):
            await c.get_project(PROJECT)


async def test_malformed_requests_get_vercels_400(
    transport: httpx.ASGITransport, client: VercelClient
) -> None:
    """Bad parameters get Vercel's 400 bad_request body; the client raises it as permanent."""
    headers = {"Authorization": f"Bearer {DEFAULT_TOKEN}"}
    async with httpx.AsyncClient(transport=transport, base_url=sandbox_url("vercel")) as http:
        r = await http.get("/v6/deployments", params={"limit": "many"}, headers=headers)
        bad_state = await http.get("/v6/deployments", params={"state": "DONE"}, headers=headers)
    assert r.status_code == 400 == bad_state.status_code
    assert r.json()["error"]["code"] == "bad_request"
    assert "limit" in r.json()["error"]["message"]
    async with client:
        with pytest.raises(VercelPermanentError, match="limit"):
            await client.list_deployments(PROJECT, limit=0)
        with pytest.raises(VercelPermanentError, match="description"):
            await client._request(
                "POST", f"/v1/projects/{PROJECT}/rollback/dpl_x", params={"description": "x" * 300}
            )


async def test_unknown_ids_get_vercels_404(client: VercelClient) -> None:
    """Unknown deployments and projects get Vercel's 404 not_found, raised as permanent."""
    async with client:
        with pytest.raises(VercelPermanentError) as dep:
            await client.get_deployment("dpl_missing")
        with pytest.raises(VercelPermanentError) as proj:
            await client.rollback("prj_missing", "dpl_missing")
    assert dep.value.status_code == 404 == proj.value.status_code
    assert "could not be found" in str(dep.value)


async def test_injected_rate_limit_is_retried(client: VercelClient, world: World) -> None:
    """An injected 429 carries Vercel's too_many_requests body; the client waits and succeeds."""
    world.add_fault(FaultRule(vendor="vercel", kind="rate_limit", retry_after=0, remaining=1))
    async with client:
        project = await client.get_project(PROJECT)
    first, second = world.requests_for("vercel", "/v9/projects")
    assert first.status == 429 and first.fault == "rate_limit"
    assert second.status == 200 and project.id == PROJECT
    body = bytes(sandbox_vercel.error_response(429, "slow down", retry_after=2).body)
    assert b'"code":"too_many_requests"' in body.replace(b" ", b"")


# --- the block -----------------------------------------------------------------------------------


async def test_block_builds_a_working_client(transport: httpx.ASGITransport) -> None:
    """VercelProject.get_client reaches the project with the block's token and base_url."""
    block = VercelProject(
        token=SecretStr(DEFAULT_TOKEN), project_id=PROJECT, base_url=sandbox_url("vercel")
    )
    async with block.get_client(transport=transport) as c:
        project = await c.get_project(block.project_id)
    assert project.name == "web"
    assert DEFAULT_TOKEN not in repr(block)


def test_block_validates_its_fields() -> None:
    """An empty token, a malformed team id or a non-http base_url is refused with the reason."""
    with pytest.raises(ValidationError, match="token is empty"):
        VercelProject(token=SecretStr(" "), project_id=PROJECT)
    with pytest.raises(ValidationError, match="team_"):
        VercelProject(token=SecretStr("t"), project_id=PROJECT, team_id="acme")
    with pytest.raises(ValidationError, match="http"):
        VercelProject(token=SecretStr("t"), project_id=PROJECT, base_url="api.vercel.com")
    ok = VercelProject(
        token=SecretStr("t"), project_id=" web ", team_id="", base_url="http://x/vercel/"
    )
    assert ok.project_id == "web" and ok.team_id is None and ok.base_url == "http://x/vercel"
    assert VercelProject.get_block_type_slug() == "vercel-project"


class TestVercelProjectStandardChecks(BlockStandardTestSuite):
    """Prefect's standard block checks (description, docs URL, field descriptions, code example)."""

    @pytest.fixture
    def block(self):  # type: ignore[no-untyped-def]
        return VercelProject

    def test_has_a_valid_image(self, block) -> None:  # type: ignore[no-untyped-def]
        """Overridden: no internet here, so the logo URL's form is checked, not its pixels."""
        assert str(block._logo_url).startswith("https://")
