"""Teams: the webhook client's error mapping (never leaking the signed URL), cards against the
sandbox, the sandbox's own answers, and the Teams block."""

from __future__ import annotations

import json

import httpx
import pytest
from pydantic import SecretStr, ValidationError

from blocks.teams import Teams
from runbook.clients.teams import TeamsClient, adaptive_card
from runbook.clock import ManualClock
from runbook.errors import TeamsPermanentError, TeamsTransientError
from runbook.sandbox import teams as sbx
from runbook.sandbox.core import DEFAULT_TOKEN, World
from tests.conftest import sandbox_url

SIG = "s1gn4tureSECRET"
URL = (
    "https://prod-01.westus.logic.azure.com/workflows/abc123/triggers/manual/paths/invoke"
    f"?api-version=2016-06-01&sp=%2Ftriggers%2Fmanual%2Frun&sv=1.0&sig={SIG}"
)


def _mock(handler, **kw) -> TeamsClient:  # type: ignore[no-untyped-def]
    return TeamsClient(URL, transport=httpx.MockTransport(handler), **kw)


def _sandbox_url(sig: str = DEFAULT_TOKEN) -> str:
    return (
        f"{sandbox_url('teams')}/workflows/wf1/triggers/manual/paths/invoke?api-version=1&sig={sig}"
    )


def _logic_error(status: int, code: str, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(
        status, json={"error": {"code": code, "message": f"{code} happened"}}, headers=headers
    )


# --- error mapping on a fake --------------------------------------------------------------------


async def test_card_is_posted_to_the_exact_signed_url() -> None:
    """post_card sends an Adaptive Card 1.2 message to the full URL, signature included."""
    seen: list[httpx.Request] = []

    def handler(req: httpx.Request) -> httpx.Response:
        seen.append(req)
        return httpx.Response(202)

    async with _mock(handler) as client:
        await client.post_card("P1: checkout", {"Severity": "P1"}, "Errors at 12%", "https://x/1")
    assert str(seen[0].url) == URL
    body = json.loads(seen[0].content)
    content = body["attachments"][0]["content"]
    assert body["type"] == "message" and content["version"] == "1.2"
    assert content["body"][2]["facts"] == [{"title": "Severity", "value": "P1"}]
    assert content["actions"][0]["url"] == "https://x/1"


async def test_429_retry_after_honoured_then_ok() -> None:
    """A throttled post is retried after Retry-After and then succeeds."""
    calls: list[httpx.Request] = []

    def handler(req: httpx.Request) -> httpx.Response:
        calls.append(req)
        if len(calls) == 1:
            return _logic_error(429, "WorkflowRequestsThrottled", {"Retry-After": "0"})
        return httpx.Response(202)

    async with _mock(handler) as client:
        await client.post_card("t", {})
    assert len(calls) == 2


async def test_5xx_is_retried_then_transient_without_the_url() -> None:
    """A persistent 503 is retried, then a TeamsTransientError naming only the host."""
    calls: list[httpx.Request] = []

    def handler(req: httpx.Request) -> httpx.Response:
        calls.append(req)
        return _logic_error(503, "ServiceUnavailable")

    async with _mock(handler, max_retries=1) as client:
        with pytest.raises(TeamsTransientError) as info:
            await client.post_card("t", {})
    assert len(calls) == 2 and info.value.status_code == 503
    assert SIG not in str(info.value) and "/workflows/" not in str(info.value)


@pytest.mark.parametrize(
    ("status", "code", "advice"),
    [
        (401, "DirectApiInvalidAuthorizationSignature", "signature"),
        (404, "WorkflowNotFound", "deleted or turned off"),
        (400, "TriggerInputSchemaMismatch", "card"),
        (413, "RequestEntityTooLarge", "shorten"),
    ],
)
async def test_4xx_is_permanent_with_the_code_and_advice(
    status: int, code: str, advice: str
) -> None:
    """401/404/400/413 are permanent, carry Teams' message and advice, and never the signed URL."""
    async with _mock(lambda req: _logic_error(status, code)) as client:
        with pytest.raises(TeamsPermanentError) as info:
            await client.post_card("t", {})
    assert info.value.status_code == status and advice in str(info.value)
    assert f"{code} happened" in str(info.value)
    assert SIG not in str(info.value)


async def test_timeout_and_connection_errors_are_transient_without_the_url() -> None:
    """Timeouts and refused connections are transient and name only the host."""

    def timeout(req: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=req)

    def refused(req: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=req)

    for handler in (timeout, refused):
        async with _mock(handler, max_retries=0) as client:
            with pytest.raises(TeamsTransientError) as info:
                await client.post_card("t", {})
        assert "prod-01.westus.logic.azure.com" in str(info.value) and SIG not in str(info.value)


async def test_oversized_card_is_refused_before_sending() -> None:
    """A message over 28 KB is a permanent error and no request is made."""
    calls: list[httpx.Request] = []

    def handler(req: httpx.Request) -> httpx.Response:
        calls.append(req)
        return httpx.Response(202)

    async with _mock(handler) as client:
        with pytest.raises(TeamsPermanentError, match="at most"):
            await client.post_card("t", {}, text="x" * 30_000)
    assert calls == []


def test_client_refuses_a_non_url() -> None:
    """A webhook URL that is not http(s) is a permanent error that does not repeat it."""
    with pytest.raises(TeamsPermanentError) as info:
        TeamsClient(f"ftp://x/{SIG}")
    assert SIG not in str(info.value)


# --- against the sandbox ------------------------------------------------------------------------


async def test_post_card_and_post_land_in_the_sandbox(world: World, sandbox_transport) -> None:  # type: ignore[no-untyped-def]
    """post_card and post deliver their cards (202) and the sandbox keeps them in order."""
    async with TeamsClient(_sandbox_url(), transport=sandbox_transport) as client:
        await client.post_card("P1: checkout", {"Incident": "INC-1"}, "Investigating")
        await client.post(adaptive_card("Resolved", {"Duration": "42 min"}))
    cards = sbx.cards(world)
    assert [c.card["body"][0]["text"] for c in cards] == ["P1: checkout", "Resolved"]
    assert cards[0].workflow_id == "wf1" and cards[0].card["version"] == "1.2"
    reqs = world.requests_for("teams")
    assert [r.status for r in reqs] == [202, 202]


async def test_wrong_or_missing_signature_is_401(world: World, sandbox_transport) -> None:  # type: ignore[no-untyped-def]
    """A wrong sig is refused with Logic Apps' 401 body, permanently, and nothing is kept."""
    async with TeamsClient(_sandbox_url(SIG), transport=sandbox_transport) as client:
        with pytest.raises(TeamsPermanentError) as info:
            await client.post_card("t", {})
    assert info.value.status_code == 401 and SIG not in str(info.value)
    async with httpx.AsyncClient(transport=sandbox_transport) as raw:
        resp = await raw.post(_sandbox_url().split("?")[0], json=adaptive_card("t", {}))
    assert resp.status_code == 401
    assert resp.json()["error"]["code"] == "DirectApiAuthorizationRequired"
    assert sbx.cards(world) == []


async def test_malformed_and_oversized_bodies(world: World, sandbox_transport) -> None:  # type: ignore[no-untyped-def]
    """Not a card -> 400 TriggerInputSchemaMismatch; bad JSON -> 400; over 28 KB -> 413."""
    async with httpx.AsyncClient(transport=sandbox_transport) as raw:
        not_card = await raw.post(_sandbox_url(), json={"text": "hello"})
        wrong_type = await raw.post(
            _sandbox_url(),
            json={"type": "message", "attachments": [{"contentType": "text/plain", "content": {}}]},
        )
        bad_json = await raw.post(_sandbox_url(), content=b"{oops")
        big = await raw.post(_sandbox_url(), content=b"x" * (29 * 1024))
    assert not_card.status_code == 400
    assert not_card.json()["error"]["code"] == "TriggerInputSchemaMismatch"
    assert "contentType" in wrong_type.json()["error"]["message"]
    assert bad_json.status_code == 400 and big.status_code == 413
    assert sbx.cards(world) == []


async def test_more_than_4_per_second_is_throttled(world: World, sandbox_transport) -> None:  # type: ignore[no-untyped-def]
    """Four posts in one clock instant pass, the fifth is 429 (transient), a second later it passes."""
    clock = ManualClock()
    world.clock = clock
    async with TeamsClient(_sandbox_url(), transport=sandbox_transport, max_retries=0) as client:
        for i in range(4):
            await client.post_card(f"c{i}", {})
        with pytest.raises(TeamsTransientError) as info:
            await client.post_card("c4", {})
        clock.advance(1.0)
        await client.post_card("c5", {})
    assert info.value.status_code == 429 and info.value.retry_after is not None
    assert len(sbx.cards(world)) == 5


def test_error_response_shape() -> None:
    """Injected faults use Logic Apps' {"error": {"code", "message"}} body; 429 has Retry-After."""
    resp = sbx.error_response(429, "slow down", retry_after=1.2)
    assert resp.headers["retry-after"] == "2"
    assert json.loads(bytes(resp.body))["error"]["code"] == "WorkflowRequestsThrottled"
    assert json.loads(bytes(sbx.error_response(503, "down").body))["error"]["code"] == (
        "ServiceUnavailable"
    )


# --- the block ----------------------------------------------------------------------------------


async def test_block_client_posts_to_the_sandbox(world: World, sandbox_transport) -> None:  # type: ignore[no-untyped-def]
    """A Teams block builds a client from its secret URL that posts to the sandbox."""
    block = Teams(webhook_url=SecretStr(_sandbox_url()))
    async with block.get_client(transport=sandbox_transport) as client:
        await client.post_card("from the block", {})
    assert sbx.cards(world)[0].card["body"][0]["text"] == "from the block"
    assert DEFAULT_TOKEN not in repr(block)


def test_block_validation() -> None:
    """A URL without sig= or not http(s) is refused, without repeating the URL."""
    with pytest.raises(ValidationError, match="no sig=") as info:
        Teams(webhook_url=SecretStr("https://x.logic.azure.com/workflows/SECRETPATH/invoke"))
    assert "SECRETPATH" not in str(info.value)
    with pytest.raises(ValidationError, match="http"):
        Teams(webhook_url=SecretStr("not a url"))
