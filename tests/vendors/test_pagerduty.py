"""PagerDuty Events v2: the client's error mapping, trigger/acknowledge/resolve against the sandbox
(dedup included), the sandbox's own answers, and the PagerDuty block."""

from __future__ import annotations

import json

import httpx
import pytest
from pydantic import SecretStr, ValidationError

from blocks.pagerduty import PagerDuty
from runbook.clients.pagerduty import PagerDutyClient
from runbook.clock import ManualClock
from runbook.errors import PagerDutyPermanentError, PagerDutyTransientError
from runbook.sandbox import pagerduty as sbx
from runbook.sandbox.core import DEFAULT_TOKEN, World
from tests.conftest import sandbox_url

KEY = "R0UTINGKEYSECRET0000000000000000"


def _mock(handler, **kw) -> PagerDutyClient:  # type: ignore[no-untyped-def]
    return PagerDutyClient(
        "https://events.pagerduty.com", KEY, transport=httpx.MockTransport(handler), **kw
    )


def _client(transport: httpx.AsyncBaseTransport, key: str = DEFAULT_TOKEN, **kw) -> PagerDutyClient:  # type: ignore[no-untyped-def]
    return PagerDutyClient(sandbox_url("pagerduty"), key, transport=transport, **kw)


def _accepted(req: httpx.Request) -> httpx.Response:
    body = json.loads(req.content)
    return httpx.Response(
        202,
        json={
            "status": "success",
            "message": "Event processed",
            "dedup_key": body.get("dedup_key", "gen"),
        },
    )


# --- error mapping on a fake --------------------------------------------------------------------


async def test_trigger_sends_the_documented_event() -> None:
    """trigger sends routing_key, event_action, dedup_key and a payload cut to 1024 characters."""
    seen: list[dict] = []  # type: ignore[type-arg]

    def handler(req: httpx.Request) -> httpx.Response:
        seen.append(json.loads(req.content))
        assert req.url.path == "/v2/enqueue"
        return _accepted(req)

    async with _mock(handler) as client:
        event = await client.trigger(
            "x" * 2000, "web", "critical", "INC-1", component="api", class_="5xx",
            custom_details={"rate": 0.12}, links=[{"href": "https://x", "text": "incident"}],
        )  # fmt: skip
    body = seen[0]
    assert event.dedup_key == "INC-1" and event.status == "success"
    assert body["routing_key"] == KEY and body["event_action"] == "trigger"
    assert len(body["payload"]["summary"]) == 1024 and body["payload"]["class"] == "5xx"
    assert body["links"][0]["href"] == "https://x"


async def test_400_is_permanent_with_pagerdutys_errors() -> None:
    """A 400 is permanent and its message lists PagerDuty's errors; the routing key never appears."""

    def handler(req: httpx.Request) -> httpx.Response:
        return httpx.Response(
            400,
            json={
                "status": "invalid event",
                "message": "Event object is invalid",
                "errors": ["Invalid routing key"],
            },
        )

    async with _mock(handler) as client:
        with pytest.raises(PagerDutyPermanentError) as info:
            await client.trigger("s", "web", "error", "INC-1")
    assert "Invalid routing key" in str(info.value) and "PagerDuty.routing_key" in str(info.value)
    assert KEY not in str(info.value) and info.value.status_code == 400


async def test_429_is_retried_then_succeeds() -> None:
    """A 429 is transient: retried, then the event is accepted."""
    calls: list[httpx.Request] = []

    def handler(req: httpx.Request) -> httpx.Response:
        calls.append(req)
        if len(calls) == 1:
            return httpx.Response(
                429, json={"status": "throttle event"}, headers={"Retry-After": "0"}
            )
        return _accepted(req)

    async with _mock(handler) as client:
        await client.acknowledge("INC-1")
    assert len(calls) == 2


async def test_5xx_and_timeouts_are_transient() -> None:
    """A persistent 500 and a timeout both end as PagerDutyTransientError."""

    def down(req: httpx.Request) -> httpx.Response:
        return httpx.Response(500, text="oops", headers={"Retry-After": "0"})

    def slow(req: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=req)

    for handler in (down, slow):
        async with _mock(handler, max_retries=1) as client:
            with pytest.raises(PagerDutyTransientError):
                await client.resolve("INC-1")


async def test_unknown_severity_is_refused_before_sending() -> None:
    """A severity PagerDuty does not know is a permanent error and no request is made."""
    calls: list[httpx.Request] = []

    def handler(req: httpx.Request) -> httpx.Response:
        calls.append(req)
        return _accepted(req)

    async with _mock(handler) as client:
        with pytest.raises(PagerDutyPermanentError, match="critical, error, warning, info"):
            await client.trigger("s", "web", "P1", "INC-1")
    assert calls == []


# --- against the sandbox ------------------------------------------------------------------------


async def test_trigger_twice_makes_one_alert(world: World, sandbox_transport) -> None:  # type: ignore[no-untyped-def]
    """Two triggers with one dedup key make a single alert holding both events."""
    async with _client(sandbox_transport) as client:
        first = await client.trigger("checkout failing", "web", "critical", "INC-7")
        second = await client.trigger("checkout failing (again)", "web", "critical", "INC-7")
    alerts = sbx.alerts(world)
    assert first.dedup_key == second.dedup_key == "INC-7"
    assert list(alerts) == ["INC-7"] and len(alerts["INC-7"].events) == 2
    assert alerts["INC-7"].status == "triggered" and alerts["INC-7"].summary == "checkout failing"
    assert [r.status for r in world.requests_for("pagerduty", "/v2/enqueue")] == [202, 202]


async def test_acknowledge_resolve_and_retrigger(world: World, sandbox_transport) -> None:  # type: ignore[no-untyped-def]
    """acknowledge then resolve move the alert; a later trigger opens a new alert under the key."""
    async with _client(sandbox_transport) as client:
        await client.trigger("db slow", "db", "error", "INC-8", component="postgres")
        ack = await client.acknowledge("INC-8")
        assert sbx.alerts(world)["INC-8"].status == "acknowledged"
        await client.resolve("INC-8")
        assert sbx.alerts(world)["INC-8"].status == "resolved"
        await client.trigger("db slow again", "db", "error", "INC-8")
    st = world.state["pagerduty"]
    assert ack.message == "Event processed"
    assert (
        st.alerts["INC-8"].status == "triggered" and st.alerts["INC-8"].summary == "db slow again"
    )
    assert [a.summary for a in st.closed] == ["db slow"]
    assert [e["event_action"] for e in st.events] == [
        "trigger",
        "acknowledge",
        "resolve",
        "trigger",
    ]


async def test_trigger_without_dedup_key_gets_one(world: World, sandbox_transport) -> None:  # type: ignore[no-untyped-def]
    """A trigger without a dedup key gets a generated one, usable to resolve the alert."""
    async with _client(sandbox_transport) as client:
        event = await client.trigger("disk full", "host-1", "warning", None)
        await client.resolve(event.dedup_key)
    assert len(event.dedup_key) == 32
    assert sbx.alerts(world)[event.dedup_key].status == "resolved"


async def test_wrong_routing_key_is_400_invalid_event(world: World, sandbox_transport) -> None:  # type: ignore[no-untyped-def]
    """A wrong routing key gets PagerDuty's 400 "invalid event" body and a permanent error."""
    async with _client(sandbox_transport, key="not-the-key", max_retries=0) as client:
        with pytest.raises(PagerDutyPermanentError, match="Invalid routing key"):
            await client.trigger("s", "web", "info", "INC-9")
    async with httpx.AsyncClient(
        transport=sandbox_transport, base_url=sandbox_url("pagerduty")
    ) as raw:
        resp = await raw.post(
            "/v2/enqueue", json={"routing_key": "nope", "event_action": "resolve", "dedup_key": "x"}
        )
    assert resp.status_code == 400
    assert resp.json() == {
        "status": "invalid event",
        "message": "Event object is invalid",
        "errors": ["Invalid routing key"],
    }
    assert sbx.alerts(world) == {}


async def test_malformed_events_list_the_fields(world: World, sandbox_transport) -> None:  # type: ignore[no-untyped-def]
    """Missing source, bad severity, a long summary, a bad action and bad JSON are 400s naming the field."""
    async with httpx.AsyncClient(
        transport=sandbox_transport, base_url=sandbox_url("pagerduty")
    ) as raw:
        bad = await raw.post(
            "/v2/enqueue",
            json={
                "routing_key": DEFAULT_TOKEN,
                "event_action": "trigger",
                "payload": {"summary": "x" * 1025, "severity": "P1"},
            },
        )
        action = await raw.post(
            "/v2/enqueue", json={"routing_key": DEFAULT_TOKEN, "event_action": "snooze"}
        )
        no_key = await raw.post(
            "/v2/enqueue", json={"routing_key": DEFAULT_TOKEN, "event_action": "resolve"}
        )
        not_json = await raw.post("/v2/enqueue", content=b"{oops")
    errors = " | ".join(bad.json()["errors"])
    assert bad.status_code == 400
    assert (
        "payload.summary" in errors and "payload.source" in errors and "payload.severity" in errors
    )
    assert "event_action" in action.json()["errors"][0]
    assert no_key.json()["errors"] == ["'dedup_key' is missing or blank"]
    assert not_json.status_code == 400 and not_json.json()["status"] == "invalid event"
    assert sbx.alerts(world) == {}


async def test_too_many_events_per_key_is_429(world: World, sandbox_transport) -> None:  # type: ignore[no-untyped-def]
    """Past the per-key budget the sandbox answers 429 and the client raises a transient error."""
    world.clock = ManualClock()
    world.state["pagerduty"].rate = sbx.RateLimit(per_second=2.0, burst=2)
    async with _client(sandbox_transport, max_retries=0) as client:
        await client.trigger("a", "web", "info", "K1")
        await client.trigger("b", "web", "info", "K2")
        with pytest.raises(PagerDutyTransientError) as info:
            await client.trigger("c", "web", "info", "K3")
    assert info.value.status_code == 429 and set(sbx.alerts(world)) == {"K1", "K2"}


# --- the block ----------------------------------------------------------------------------------


async def test_block_client_pages_through_the_sandbox(world: World, sandbox_transport) -> None:  # type: ignore[no-untyped-def]
    """A PagerDuty block pointed at the sandbox triggers an alert with its default source."""
    block = PagerDuty(routing_key=SecretStr(DEFAULT_TOKEN), base_url=sandbox_url("pagerduty"))
    async with block.get_client(transport=sandbox_transport) as client:
        await client.trigger("from the block", block.default_source, "critical", "INC-B")
    assert sbx.alerts(world)["INC-B"].source == "runbook"
    assert DEFAULT_TOKEN not in repr(block)


def test_block_validation() -> None:
    """On PagerDuty itself the routing key must be 32 characters; the message never shows it."""
    with pytest.raises(ValidationError, match="32") as info:
        PagerDuty(routing_key=SecretStr("short-secret"))
    assert "short-secret" not in str(info.value)
    with pytest.raises(ValidationError, match="default_source"):
        PagerDuty(routing_key=SecretStr(KEY), default_source=" ")
    assert isinstance(PagerDuty(routing_key=SecretStr(KEY)).get_client(), PagerDutyClient)
