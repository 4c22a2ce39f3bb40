"""Statuspage: the client's error mapping (420 included), incidents and components against the
sandbox, the sandbox's own answers, and the Statuspage block."""

from __future__ import annotations

import httpx
import pytest
from pydantic import SecretStr, ValidationError

from blocks.statuspage import Statuspage
from runbook.clients.statuspage import StatuspageClient
from runbook.clock import ManualClock
from runbook.errors import StatuspagePermanentError, StatuspageTransientError
from runbook.sandbox import statuspage as sbx
from runbook.sandbox.core import DEFAULT_TOKEN, World
from tests.conftest import sandbox_url

API_KEY = "sp-api-key-SECRET"
API = sbx.COMPONENTS["API"]
WEB = sbx.COMPONENTS["Web app"]


def _mock(handler, **kw) -> StatuspageClient:  # type: ignore[no-untyped-def]
    return StatuspageClient(
        "https://api.statuspage.io", API_KEY, "pg1", transport=httpx.MockTransport(handler), **kw
    )


def _client(
    transport: httpx.AsyncBaseTransport, key: str = DEFAULT_TOKEN, **kw
) -> StatuspageClient:  # type: ignore[no-untyped-def]
    return StatuspageClient(sandbox_url("statuspage"), key, sbx.PAGE_ID, transport=transport, **kw)


def _raw(transport: httpx.AsyncBaseTransport, key: str = DEFAULT_TOKEN) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=transport,
        base_url=sandbox_url("statuspage"),
        headers={"Authorization": f"OAuth {key}"},
    )


# --- error mapping on a fake --------------------------------------------------------------------


async def test_420_is_transient_and_retried() -> None:
    """Statuspage's 420 rate limit is retried, and the call then succeeds."""
    calls: list[httpx.Request] = []

    def handler(req: httpx.Request) -> httpx.Response:
        calls.append(req)
        if len(calls) == 1:
            return httpx.Response(
                420, json={"error": "Rate limit exceeded"}, headers={"Retry-After": "0"}
            )
        assert req.headers["authorization"] == f"OAuth {API_KEY}"
        return httpx.Response(200, json=[{"id": "c1", "name": "API", "status": "operational"}])

    async with _mock(handler) as client:
        comps = await client.list_components()
    assert len(calls) == 2 and comps[0].name == "API"
    assert calls[1].url.path == "/v1/pages/pg1/components"


@pytest.mark.parametrize("status", [420, 429, 503])
async def test_rate_limits_and_5xx_end_transient(status: int) -> None:
    """Persistent 420, 429 and 503 end as StatuspageTransientError with the status."""

    def handler(req: httpx.Request) -> httpx.Response:
        return httpx.Response(status, json={"error": "slow down"}, headers={"Retry-After": "0"})

    async with _mock(handler, max_retries=1) as client:
        with pytest.raises(StatuspageTransientError) as info:
            await client.unresolved_incidents()
    assert info.value.status_code == status


@pytest.mark.parametrize(
    ("status", "error", "advice"),
    [
        (401, "Could not authenticate", "Statuspage.api_key"),
        (404, "Not found", "Statuspage.page_id"),
        (422, ["Status is not included in the list"], "Status is not included"),
    ],
)
async def test_4xx_is_permanent_with_statuspages_message(status: int, error, advice: str) -> None:  # type: ignore[no-untyped-def]
    """401, 404 and 422 are permanent, carry Statuspage's error and say what to fix, never the key."""

    def handler(req: httpx.Request) -> httpx.Response:
        return httpx.Response(status, json={"error": error})

    async with _mock(handler) as client:
        with pytest.raises(StatuspagePermanentError) as info:
            await client.update_incident("i1", body="x")
    assert advice in str(info.value) and API_KEY not in str(info.value)
    assert info.value.status_code == status


async def test_timeout_is_transient() -> None:
    """A timeout is a StatuspageTransientError."""

    def handler(req: httpx.Request) -> httpx.Response:
        raise httpx.ConnectTimeout("timed out", request=req)

    async with _mock(handler, max_retries=0) as client:
        with pytest.raises(StatuspageTransientError):
            await client.list_components()


async def test_bad_statuses_are_refused_before_sending() -> None:
    """Unknown incident or component statuses are permanent errors and no request is made."""
    calls: list[httpx.Request] = []

    def handler(req: httpx.Request) -> httpx.Response:
        calls.append(req)
        return httpx.Response(200, json={})

    async with _mock(handler) as client:
        with pytest.raises(StatuspagePermanentError, match="investigating"):
            await client.create_incident("x", "open", "b")
        with pytest.raises(StatuspagePermanentError, match="major_outage"):
            await client.set_component_status("c1", "down")
    assert calls == []


# --- against the sandbox ------------------------------------------------------------------------


async def test_create_then_resolve_an_incident(world: World, sandbox_transport) -> None:  # type: ignore[no-untyped-def]
    """An incident with component statuses opens, is found open, resolves, and is then gone from unresolved."""
    async with _client(sandbox_transport) as client:
        created = await client.create_incident(
            "[INC-5] Checkout errors", "investigating", "We are looking into it.",
            components={API: "partial_outage"},
        )  # fmt: skip
        found = await client.find_open_incident("[INC-5]")
        missing = await client.find_open_incident("[INC-6]")
        resolved = await client.update_incident(
            created.id, status="resolved", body="Fixed.", components={API: "operational"}
        )
        unresolved = await client.unresolved_incidents()
        after = await client.find_open_incident("[INC-5]")
    page = sbx.page(world)
    stored = page.incidents[created.id]
    assert found is not None and found.id == created.id and missing is None
    assert created.status == "investigating" and created.impact == "major"
    assert created.components[0].status == "partial_outage" and created.shortlink
    assert resolved.resolved and resolved.resolved_at and unresolved == [] and after is None
    assert [u.status for u in resolved.incident_updates] == ["resolved", "investigating"]
    assert stored.status == "resolved" and page.components[API].status == "operational"
    assert [r.status for r in world.requests_for("statuspage", "/incidents")] == [
        201,
        200,
        200,
        200,
        200,
        200,
    ]


async def test_components_list_and_set(world: World, sandbox_transport) -> None:  # type: ignore[no-untyped-def]
    """The page's four components are listed, and set_component_status changes one in state."""
    async with _client(sandbox_transport) as client:
        comps = await client.list_components()
        changed = await client.set_component_status(WEB, "degraded_performance")
    assert [c.name for c in comps] == ["Web app", "API", "Authentication", "Edge functions"]
    assert changed.status == "degraded_performance"
    assert sbx.page(world).components[WEB].status == "degraded_performance"
    patch = world.requests_for("statuspage", f"/components/{WEB}")[0]
    assert patch.method == "PATCH" and patch.headers["authorization"] == "***"


async def test_wrong_key_gets_could_not_authenticate(world: World, sandbox_transport) -> None:  # type: ignore[no-untyped-def]
    """A wrong API key is 401 {"error": "Could not authenticate"} and a permanent error."""
    async with _client(sandbox_transport, key="wrong") as client:
        with pytest.raises(StatuspagePermanentError, match="Could not authenticate"):
            await client.list_components()
    async with _raw(sandbox_transport, key="wrong") as raw:
        resp = await raw.get(f"/v1/pages/{sbx.PAGE_ID}/components")
    assert resp.status_code == 401 and resp.json() == {"error": "Could not authenticate"}


async def test_unknown_page_or_incident_is_404(sandbox_transport) -> None:  # type: ignore[no-untyped-def]
    """An unknown page or incident gets 404 {"error": ...} and a permanent error."""
    async with StatuspageClient(
        sandbox_url("statuspage"), DEFAULT_TOKEN, "nopage", transport=sandbox_transport
    ) as client:
        with pytest.raises(StatuspagePermanentError, match="page_id"):
            await client.list_components()
    async with _client(sandbox_transport) as client:
        with pytest.raises(StatuspagePermanentError) as info:
            await client.update_incident("nope", status="resolved")
    assert info.value.status_code == 404


async def test_malformed_requests(world: World, sandbox_transport) -> None:  # type: ignore[no-untyped-def]
    """Missing incident param -> 400; bad status, blank name or unknown component -> 422; nothing created."""
    path = f"/v1/pages/{sbx.PAGE_ID}/incidents"
    async with _raw(sandbox_transport) as raw:
        missing = await raw.post(path, json={"name": "x"})
        bad_status = await raw.post(path, json={"incident": {"name": "x", "status": "open"}})
        blank = await raw.post(path, json={"incident": {"name": " ", "status": "identified"}})
        unknown = await raw.post(
            path, json={"incident": {"name": "x", "components": {"nope": "major_outage"}}}
        )
        bad_json = await raw.post(path, content=b"{oops")
        comp = await raw.patch(
            f"/v1/pages/{sbx.PAGE_ID}/components/{API}", json={"component": {"status": "down"}}
        )
    assert missing.status_code == 400 and "incident" in missing.json()["error"]
    assert bad_status.status_code == 422 and "Status" in bad_status.json()["error"]
    assert blank.status_code == 422 and unknown.status_code == 422
    assert bad_json.status_code == 400 and comp.status_code == 422
    assert sbx.page(world).incidents == {}
    assert sbx.page(world).components[API].status == "operational"


async def test_rate_limit_is_420_by_default_and_429_when_set(
    world: World, sandbox_transport
) -> None:  # type: ignore[no-untyped-def]
    """After a burst of 10 in one clock instant the next call is 420 (or 429 if configured), transient."""
    clock = ManualClock()
    world.clock = clock
    async with _client(sandbox_transport, max_retries=0) as client:
        for _ in range(10):
            await client.list_components()
        with pytest.raises(StatuspageTransientError) as first:
            await client.list_components()
        world.state["statuspage"].limit_status = 429
        with pytest.raises(StatuspageTransientError) as second:
            await client.list_components()
        clock.advance(1.0)
        await client.list_components()
    assert first.value.status_code == 420 and second.value.status_code == 429
    assert first.value.retry_after == 1


# --- the block ----------------------------------------------------------------------------------


async def test_block_client_reaches_the_sandbox(world: World, sandbox_transport) -> None:  # type: ignore[no-untyped-def]
    """A Statuspage block maps a service to its component and its client sets that component."""
    block = Statuspage(
        api_key=SecretStr(DEFAULT_TOKEN),
        page_id=sbx.PAGE_ID,
        component_map={"api": API},
        base_url=sandbox_url("statuspage") + "/v1",
    )
    async with block.get_client(transport=sandbox_transport) as client:
        await client.set_component_status(block.component_map["api"], "major_outage")
    assert sbx.page(world).components[API].status == "major_outage"
    assert block.base_url == sandbox_url("statuspage") and DEFAULT_TOKEN not in repr(block)


def test_block_validation() -> None:
    """A blank key, a blank page id or a component without id are refused with clear messages."""
    with pytest.raises(ValidationError, match="api_key is empty"):
        Statuspage(api_key=SecretStr(" "), page_id="p")
    with pytest.raises(ValidationError, match="page_id"):
        Statuspage(api_key=SecretStr("k"), page_id="")
    with pytest.raises(ValidationError, match="no component id for: web"):
        Statuspage(api_key=SecretStr("k"), page_id="p", component_map={"web": ""})
