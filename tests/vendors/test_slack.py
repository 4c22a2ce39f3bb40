"""Slack: the client's error mapping, every operation against the sandbox, the sandbox's own
answers (auth, malformed requests, rate limit, webhooks), and the Slack block."""

from __future__ import annotations

import json
import time

import httpx
import pytest
from pydantic import SecretStr, ValidationError

from blocks.slack import Slack
from runbook.clients.slack import SlackClient, SlackWebhookClient
from runbook.clock import ManualClock
from runbook.errors import SlackPermanentError, SlackTransientError
from runbook.sandbox import slack as sbx
from runbook.sandbox.core import DEFAULT_TOKEN, FaultRule, World
from tests.conftest import sandbox_url

TOKEN = "xoxb-secret-token-123"
HOOK_SECRET = "hooksecretXYZ"
HOOK_URL = f"https://hooks.slack.com/services/T000/B000/{HOOK_SECRET}"


def _mock(handler, **kw) -> SlackClient:  # type: ignore[no-untyped-def]
    return SlackClient("https://slack.com", TOKEN, transport=httpx.MockTransport(handler), **kw)


def _ok_false(code: str) -> httpx.Response:
    return httpx.Response(200, json={"ok": False, "error": code})


# --- error mapping on a fake --------------------------------------------------------------------


@pytest.mark.parametrize(
    "code", ["invalid_auth", "not_authed", "account_inactive", "token_revoked"]
)
async def test_auth_codes_are_permanent_and_name_the_token(code: str) -> None:
    """An auth code in an HTTP 200 is a permanent error telling to check the bot token, without it."""
    async with _mock(lambda req: _ok_false(code)) as client:
        with pytest.raises(SlackPermanentError) as info:
            await client.post_message("#alerts", "hi")
    assert info.value.vendor_message == code
    assert "check the Slack bot token" in str(info.value)
    assert TOKEN not in str(info.value)


@pytest.mark.parametrize(
    ("code", "advice"),
    [("channel_not_found", "fix the channel"), ("not_in_channel", "invite the bot")],
)
async def test_channel_codes_say_what_to_fix(code: str, advice: str) -> None:
    """channel_not_found and not_in_channel are permanent and say to fix the channel or invite the bot."""
    async with _mock(lambda req: _ok_false(code)) as client:
        with pytest.raises(SlackPermanentError) as info:
            await client.post_message("#nowhere", "hi")
    assert advice in str(info.value) and code in str(info.value)


async def test_other_codes_are_permanent_with_the_code() -> None:
    """Any other ok:false code is permanent and named in the message."""
    async with _mock(lambda req: _ok_false("msg_too_long")) as client:
        with pytest.raises(SlackPermanentError, match="msg_too_long"):
            await client.post_message("#alerts", "x")


async def test_http_429_retry_after_is_honoured_then_succeeds() -> None:
    """A 429 with Retry-After is waited out and the call then succeeds."""
    stamps: list[float] = []

    def handler(req: httpx.Request) -> httpx.Response:
        stamps.append(time.monotonic())
        if len(stamps) == 1:
            return httpx.Response(
                429, json={"ok": False, "error": "ratelimited"}, headers={"Retry-After": "0.2"}
            )
        return httpx.Response(200, json={"ok": True, "channel": "C1", "ts": "1.000001"})

    async with _mock(handler) as client:
        msg = await client.post_message("#alerts", "hi")
    assert msg.ts == "1.000001" and len(stamps) == 2
    assert stamps[1] - stamps[0] >= 0.19


async def test_ratelimited_in_body_is_transient_with_retry_after() -> None:
    """ratelimited (HTTP 429 or in a 200 body) ends as SlackTransientError carrying Retry-After."""

    def handler(req: httpx.Request) -> httpx.Response:
        return httpx.Response(
            429, json={"ok": False, "error": "ratelimited"}, headers={"Retry-After": "45"}
        )

    async with _mock(handler, max_retries=0) as client:
        with pytest.raises(SlackTransientError) as info:
            await client.post_message("#alerts", "hi")
    assert info.value.retry_after == 45 and info.value.status_code == 429
    async with _mock(lambda req: _ok_false("ratelimited"), max_retries=0) as client:
        with pytest.raises(SlackTransientError):
            await client.post_message("#alerts", "hi")


async def test_5xx_is_retried_then_transient() -> None:
    """A 503 page from Slack's edge is retried, then raised as SlackTransientError."""
    calls = []

    def handler(req: httpx.Request) -> httpx.Response:
        calls.append(req)
        return httpx.Response(503, text="<html>503</html>")

    async with _mock(handler, max_retries=1) as client:
        with pytest.raises(SlackTransientError) as info:
            await client.post_message("#alerts", "hi")
    assert len(calls) == 2 and info.value.status_code == 503


async def test_timeout_is_transient() -> None:
    """A read timeout is a SlackTransientError."""

    def handler(req: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=req)

    async with _mock(handler, max_retries=0) as client:
        with pytest.raises(SlackTransientError):
            await client.post_message("#alerts", "hi")


async def test_name_taken_is_resolved_through_the_paginated_list() -> None:
    """create_channel answers name_taken by finding the channel on a later page of conversations.list."""

    def handler(req: httpx.Request) -> httpx.Response:
        body = json.loads(req.content)
        if req.url.path.endswith("conversations.create"):
            return _ok_false("name_taken")
        if "cursor" not in body:
            return httpx.Response(
                200,
                json={
                    "ok": True,
                    "channels": [{"id": "C1", "name": "other"}],
                    "response_metadata": {"next_cursor": "page2"},
                },
            )
        return httpx.Response(
            200,
            json={
                "ok": True,
                "channels": [{"id": "C2", "name": "inc-42"}],
                "response_metadata": {"next_cursor": ""},
            },
        )

    async with _mock(handler) as client:
        channel = await client.create_channel("inc-42")
    assert channel.id == "C2"


async def test_name_taken_by_an_invisible_channel_is_permanent() -> None:
    """name_taken for a channel the bot cannot list is a permanent error that says so."""

    def handler(req: httpx.Request) -> httpx.Response:
        if req.url.path.endswith("conversations.create"):
            return _ok_false("name_taken")
        return httpx.Response(200, json={"ok": True, "channels": [], "response_metadata": {}})

    async with _mock(handler) as client:
        with pytest.raises(SlackPermanentError, match="cannot see it"):
            await client.create_channel("inc-42")


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        (400, "invalid_payload"),
        (403, "invalid_token"),
        (404, "no_service"),
        (410, "channel_is_archived"),
    ],
)
async def test_webhook_errors_are_permanent_and_never_echo_the_url(
    status: int, reason: str
) -> None:
    """Webhook 400/403/404/410 are permanent with Slack's reason, and the secret URL is not in them."""
    transport = httpx.MockTransport(lambda req: httpx.Response(status, text=reason))
    async with SlackWebhookClient(HOOK_URL, transport=transport) as client:
        with pytest.raises(SlackPermanentError) as info:
            await client.post("hi")
    assert reason in str(info.value) and info.value.status_code == status
    assert HOOK_SECRET not in str(info.value) and "/services/" not in str(info.value)


async def test_webhook_transport_failures_never_echo_the_url() -> None:
    """A webhook timeout or connection error is transient and names the host only."""

    def timeout(req: httpx.Request) -> httpx.Response:
        raise httpx.ConnectTimeout("timed out", request=req)

    def refused(req: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=req)

    for handler in (timeout, refused):
        async with SlackWebhookClient(
            HOOK_URL, transport=httpx.MockTransport(handler), max_retries=0
        ) as client:
            with pytest.raises(SlackTransientError) as info:
                await client.post("hi")
        assert "hooks.slack.com" in str(info.value) and HOOK_SECRET not in str(info.value)


async def test_webhook_posts_to_the_exact_url() -> None:
    """The webhook client posts JSON {text, blocks} to the webhook's own path."""
    seen: list[httpx.Request] = []

    def handler(req: httpx.Request) -> httpx.Response:
        seen.append(req)
        return httpx.Response(200, text="ok")

    async with SlackWebhookClient(HOOK_URL, transport=httpx.MockTransport(handler)) as client:
        await client.post("hi", blocks=[{"type": "divider"}])
    assert str(seen[0].url) == HOOK_URL
    assert json.loads(seen[0].content) == {"text": "hi", "blocks": [{"type": "divider"}]}


# --- against the sandbox ------------------------------------------------------------------------


def _client(transport: httpx.AsyncBaseTransport, token: str = DEFAULT_TOKEN, **kw) -> SlackClient:  # type: ignore[no-untyped-def]
    return SlackClient(sandbox_url("slack"), token, transport=transport, **kw)


def _raw(transport: httpx.AsyncBaseTransport) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=transport, base_url=sandbox_url("slack"))


async def test_post_message_lands_in_the_channel(world: World, sandbox_transport) -> None:  # type: ignore[no-untyped-def]
    """post_message by #name stores the message in that channel and answers its id and ts."""
    async with _client(sandbox_transport) as client:
        msg = await client.post_message("#incidents", "P1 opened", blocks=[{"type": "divider"}])
        reply = await client.post_message(msg.channel, "update", thread_ts=msg.ts)
    assert msg.channel == sbx.INITIAL_CHANNELS["incidents"]
    stored = sbx.messages(world, "#incidents")
    assert [m["text"] for m in stored] == ["P1 opened", "update"]
    assert stored[0]["blocks"] == [{"type": "divider"}] and stored[1]["thread_ts"] == msg.ts
    assert reply.ts > msg.ts
    reqs = world.requests_for("slack", r"chat\.postMessage")
    assert len(reqs) == 2 and all(r.status == 200 for r in reqs)
    assert reqs[0].headers["authorization"] == "***"


async def test_create_channel_twice_returns_the_same_channel(
    world: World, sandbox_transport
) -> None:  # type: ignore[no-untyped-def]
    """A second create_channel of one name gets name_taken, looks it up and returns the same channel."""
    async with _client(sandbox_transport) as client:
        first = await client.create_channel("inc-42-checkout")
        second = await client.create_channel("#inc-42-checkout")
    assert first.id == second.id and first.name == "inc-42-checkout"
    assert [c.name for c in world.state["slack"].channels.values()].count("inc-42-checkout") == 1
    creates = world.requests_for("slack", r"conversations\.create")
    assert len(creates) == 2 and len(world.requests_for("slack", r"conversations\.list")) == 1


async def test_create_channel_with_a_bad_name_is_permanent(sandbox_transport) -> None:  # type: ignore[no-untyped-def]
    """An uppercase or too long name is refused with Slack's own code."""
    async with _client(sandbox_transport) as client:
        with pytest.raises(SlackPermanentError, match="invalid_name_specials"):
            await client.create_channel("Inc 42")
        with pytest.raises(SlackPermanentError, match="invalid_name_maxlength"):
            await client.create_channel("x" * 81)


async def test_channel_info_by_id_and_name(world: World, sandbox_transport) -> None:  # type: ignore[no-untyped-def]
    """channel_info finds a channel by id and by #name, and an unknown one is channel_not_found."""
    async with _client(sandbox_transport) as client:
        by_id = await client.channel_info(sbx.INITIAL_CHANNELS["alerts"])
        by_name = await client.channel_info("#engineering")
        with pytest.raises(SlackPermanentError, match="channel_not_found"):
            await client.channel_info("C0NOPE0000")
        with pytest.raises(SlackPermanentError, match="channel_not_found"):
            await client.channel_info("#nope")
    assert by_id.name == "alerts" and by_name.id == sbx.INITIAL_CHANNELS["engineering"]
    assert world.requests_for("slack", r"conversations\.info")


async def test_not_in_channel_says_invite_the_bot(world: World, sandbox_transport) -> None:  # type: ignore[no-untyped-def]
    """Posting to a channel the bot left is not_in_channel, and nothing is stored."""
    sbx.find_channel(world, "#engineering").is_member = False  # type: ignore[union-attr]
    async with _client(sandbox_transport) as client:
        with pytest.raises(SlackPermanentError, match="invite the bot"):
            await client.post_message("#engineering", "hi")
    assert sbx.messages(world, "#engineering") == []


async def test_wrong_or_missing_token_gets_slacks_body(world: World, sandbox_transport) -> None:  # type: ignore[no-untyped-def]
    """A wrong token is invalid_auth and a missing one not_authed, both HTTP 200 ok:false."""
    async with _client(sandbox_transport, token="xoxb-wrong") as client:
        with pytest.raises(SlackPermanentError, match="invalid_auth"):
            await client.post_message("#alerts", "hi")
    async with _raw(sandbox_transport) as raw:
        resp = await raw.post("/api/chat.postMessage", json={"channel": "#alerts", "text": "x"})
    assert resp.status_code == 200 and resp.json() == {"ok": False, "error": "not_authed"}
    assert sbx.messages(world, "#alerts") == []


async def test_malformed_requests_get_slacks_codes(world: World, sandbox_transport) -> None:  # type: ignore[no-untyped-def]
    """Bad JSON is invalid_json, no text is no_text, an unknown method is unknown_method."""
    auth = {"Authorization": f"Bearer {DEFAULT_TOKEN}", "Content-Type": "application/json"}
    async with _raw(sandbox_transport) as raw:
        bad = await raw.post("/api/chat.postMessage", content=b"{nope", headers=auth)
        empty = await raw.post("/api/chat.postMessage", json={"channel": "#alerts"}, headers=auth)
        unknown = await raw.post("/api/chat.nope", json={}, headers=auth)
    assert bad.json() == {"ok": False, "error": "invalid_json"}
    assert empty.json() == {"ok": False, "error": "no_text"}
    assert unknown.status_code == 404 and unknown.json()["error"] == "unknown_method"
    assert sbx.messages(world, "#alerts") == []


async def test_form_encoded_post_works(world: World, sandbox_transport) -> None:  # type: ignore[no-untyped-def]
    """A form-encoded call with the token in the body is accepted, as Slack accepts it."""
    async with _raw(sandbox_transport) as raw:
        resp = await raw.post(
            "/api/chat.postMessage",
            data={"token": DEFAULT_TOKEN, "channel": "#alerts", "text": "form"},
        )
    assert resp.json()["ok"] is True and sbx.messages(world, "#alerts")[0]["text"] == "form"


async def test_per_channel_rate_limit_in_clock_time(world: World, sandbox_transport) -> None:  # type: ignore[no-untyped-def]
    """A burst of 5 passes, the 6th is 429 ratelimited with Retry-After, and a clock second frees one."""
    clock = ManualClock()
    world.clock = clock
    async with _client(sandbox_transport, max_retries=0) as client:
        for i in range(5):
            await client.post_message("#alerts", f"m{i}")
        await client.post_message("#incidents", "another channel is not limited")
        with pytest.raises(SlackTransientError) as info:
            await client.post_message("#alerts", "too fast")
        clock.advance(1.0)
        await client.post_message("#alerts", "after a second")
    assert info.value.status_code == 429 and info.value.retry_after == 1
    assert len(sbx.messages(world, "#alerts")) == 6
    limited = [r for r in world.requests_for("slack") if r.status == 429]
    assert len(limited) == 1


async def test_rate_limit_can_be_turned_off(world: World, sandbox_transport) -> None:  # type: ignore[no-untyped-def]
    """With the rate limit disabled, 12 posts at one instant all pass."""
    world.clock = ManualClock()
    world.state["slack"].rate.enabled = False
    async with _client(sandbox_transport, max_retries=0) as client:
        for i in range(12):
            await client.post_message("#alerts", f"m{i}")
    assert len(sbx.messages(world, "#alerts")) == 12


async def test_injected_5xx_is_retried_through(world: World, sandbox_transport) -> None:  # type: ignore[no-untyped-def]
    """One injected 503 (Slack's HTML edge page) is retried and the message still posts once."""
    world.add_fault(FaultRule(vendor="slack", kind="error", remaining=1))
    async with _client(sandbox_transport) as client:
        await client.post_message("#alerts", "through")
    reqs = world.requests_for("slack")
    assert [r.status for r in reqs] == [503, 200] and reqs[0].fault == "error"
    assert len(sbx.messages(world, "#alerts")) == 1


async def test_webhook_against_the_sandbox(world: World, sandbox_transport) -> None:  # type: ignore[no-untyped-def]
    """The webhook posts into #alerts; a wrong secret is 403 invalid_token and never echoed."""
    good = f"{sandbox_url('slack')}/services/T0/B0/{DEFAULT_TOKEN}"
    bad = f"{sandbox_url('slack')}/services/T0/B0/{HOOK_SECRET}"
    async with SlackWebhookClient(good, transport=sandbox_transport) as client:
        await client.post("via webhook")
    async with SlackWebhookClient(bad, transport=sandbox_transport) as client:
        with pytest.raises(SlackPermanentError) as info:
            await client.post("nope")
    assert [m["text"] for m in sbx.messages(world, "#alerts")] == ["via webhook"]
    assert info.value.status_code == 403 and "invalid_token" in str(info.value)
    assert HOOK_SECRET not in str(info.value)
    assert [r.status for r in world.requests_for("slack", "/services/")] == [200, 403]


async def test_webhook_malformed_bodies(sandbox_transport) -> None:  # type: ignore[no-untyped-def]
    """A non-JSON webhook body is 400 invalid_payload and one without text is 400 no_text."""
    async with _raw(sandbox_transport) as raw:
        path = f"/services/T0/B0/{DEFAULT_TOKEN}"
        bad = await raw.post(
            path, content=b"not json", headers={"Content-Type": "application/json"}
        )
        empty = await raw.post(path, json={"username": "x"})
        ok = await raw.post(path, json={"text": "fine"})
    assert (bad.status_code, bad.text) == (400, "invalid_payload")
    assert (empty.status_code, empty.text) == (400, "no_text")
    assert (ok.status_code, ok.text, ok.headers["content-type"][:10]) == (200, "ok", "text/plain")


def test_error_response_shapes() -> None:
    """Injected 429 is Slack's JSON ratelimited with Retry-After; 5xx is an HTML page."""
    limited = sbx.error_response(429, "x", retry_after=2.5)
    assert limited.status_code == 429 and limited.headers["retry-after"] == "3"
    assert json.loads(bytes(limited.body)) == {"ok": False, "error": "ratelimited"}
    down = sbx.error_response(502, "bad gateway")
    assert down.status_code == 502 and down.media_type == "text/html"


# --- the block ----------------------------------------------------------------------------------


async def test_block_client_posts_to_the_sandbox(world: World, sandbox_transport) -> None:  # type: ignore[no-untyped-def]
    """A Slack block pointed at the sandbox builds a working client from its secret token."""
    block = Slack(bot_token=SecretStr(DEFAULT_TOKEN), base_url=sandbox_url("slack") + "/")
    async with block.get_client(transport=sandbox_transport) as client:
        await client.post_message(block.channel, "from the block")
    assert sbx.messages(world, block.channel)[0]["text"] == "from the block"
    assert block.can_create_channels and DEFAULT_TOKEN not in repr(block)


def test_block_validation() -> None:
    """The block needs a token or webhook, an xoxb- token on slack.com, and a sane channel."""
    with pytest.raises(ValidationError, match="or webhook_url: Slack needs one"):
        Slack()
    with pytest.raises(ValidationError, match="xoxb-"):
        Slack(bot_token=SecretStr("xoxp-user-token"))
    with pytest.raises(ValidationError, match="channel must be"):
        Slack(bot_token=SecretStr("xoxb-1"), channel="alerts")
    with pytest.raises(ValidationError) as info:
        Slack(webhook_url=SecretStr("https://hooks.slack.com/wrong/" + HOOK_SECRET))
    assert HOOK_SECRET not in str(info.value)
    assert isinstance(Slack(bot_token=SecretStr("xoxb-1")).get_client(), SlackClient)


def test_webhook_only_block() -> None:
    """A webhook-only block cannot create channels, refuses get_client, and gives a webhook client."""
    block = Slack(webhook_url=SecretStr(HOOK_URL))
    assert not block.can_create_channels
    with pytest.raises(SlackPermanentError, match="no bot_token"):
        block.get_client()
    assert isinstance(block.get_webhook_client(), SlackWebhookClient)
    with pytest.raises(SlackPermanentError, match="no webhook_url"):
        Slack(bot_token=SecretStr("xoxb-1")).get_webhook_client()
