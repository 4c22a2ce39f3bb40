"""The shared client base: transient vs permanent, Retry-After honoured, timeouts bounded."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest

from runbook.clients.base import BaseClient, parse_retry_after
from runbook.errors import PermanentError, TransientError


def _client(handler, **kw) -> BaseClient:
    return BaseClient("http://vendor", transport=httpx.MockTransport(handler), **kw)


async def test_transient_then_success_is_retried() -> None:
    """Two 503s then a 200 succeed within the in-client retries."""
    calls = []

    def handler(req: httpx.Request) -> httpx.Response:
        calls.append(req)
        if len(calls) < 3:
            return httpx.Response(503, json={"message": "down"}, headers={"retry-after": "0"})
        return httpx.Response(200, json={"ok": True})

    async with _client(handler) as c:
        assert await c._json("GET", "/x") == {"ok": True}
    assert len(calls) == 3


async def test_retry_after_is_honoured() -> None:
    """A 429 with Retry-After: 0.3 waits at least that long before the next try."""
    stamps: list[float] = []

    def handler(req: httpx.Request) -> httpx.Response:
        stamps.append(time.monotonic())
        if len(stamps) == 1:
            return httpx.Response(429, json={"error": "slow down"}, headers={"retry-after": "0.3"})
        return httpx.Response(200, json={})

    async with _client(handler) as c:
        await c._json("GET", "/x")
    assert stamps[1] - stamps[0] >= 0.29


async def test_persistent_5xx_raises_transient_with_status() -> None:
    """After the retries, a 502 is a TransientError carrying the status and vendor message."""

    def handler(req):
        return httpx.Response(502, json={"message": "bad gateway"}, headers={"retry-after": "0"})

    async with _client(handler, max_retries=1) as c:
        with pytest.raises(TransientError) as info:
            await c._json("GET", "/x")
    assert info.value.status_code == 502
    assert info.value.vendor_message == "bad gateway"


async def test_long_retry_after_is_not_waited_in_client() -> None:
    """A Retry-After above the cap raises at once so Prefect's task retry takes over."""
    calls = []

    def handler(req):
        calls.append(req)
        return httpx.Response(429, json={}, headers={"retry-after": "3600"})

    async with _client(handler, max_retry_after=5) as c:
        with pytest.raises(TransientError) as info:
            await c._json("GET", "/x")
    assert len(calls) == 1 and info.value.retry_after == 3600


async def test_4xx_is_permanent_and_not_retried() -> None:
    """A 404 fails at once with the vendor's message and without credentials."""
    calls = []

    def handler(req):
        calls.append(req)
        return httpx.Response(
            404, json={"error": {"code": "not_found", "message": "no such project"}}
        )

    c = BaseClient(
        "http://vendor",
        headers={"Authorization": "Bearer s3cr3t"},
        transport=httpx.MockTransport(handler),
    )
    with pytest.raises(PermanentError) as info:
        await c._json("GET", "/x")
    await c.aclose()
    assert len(calls) == 1
    assert "no such project" in str(info.value)
    assert "s3cr3t" not in str(info.value)


async def test_hanging_call_is_a_transient_timeout() -> None:
    """A call that does not answer within the client's timeout raises TransientError."""

    async def handler(req):
        await asyncio.sleep(5)
        return httpx.Response(200)

    async with _client(handler, timeout=0.2, max_retries=0) as c:
        with pytest.raises(TransientError, match="did not answer"):
            await c._request("GET", "/slow")


async def test_connection_error_is_transient() -> None:
    """A refused connection is transient and names where it tried, not the credentials."""

    def handler(req):
        raise httpx.ConnectError("refused")

    async with _client(handler, max_retries=0) as c:
        with pytest.raises(TransientError, match="cannot reach"):
            await c._request("GET", "/x")


async def test_non_json_success_is_permanent() -> None:
    """A 200 whose body is not JSON is a permanent error when JSON was expected."""
    async with _client(lambda r: httpx.Response(200, text="<html>")) as c:
        with pytest.raises(PermanentError, match="not JSON"):
            await c._json("GET", "/x")


def test_parse_retry_after_forms() -> None:
    """Retry-After parses as seconds or an HTTP date; junk gives None."""
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    when = datetime.now(UTC) + timedelta(seconds=30)
    secs = parse_retry_after(format_datetime(when, usegmt=True))
    assert secs is not None and 25 <= secs <= 31


def test_clients_inside_shared_connections_reuse_one_connection_per_host() -> None:
    """Inside ``shared_connections`` two clients (one closed before the other is made) call the same
    host over one TCP connection; outside, each client opens its own; the pool closes on exit."""
    from runbook.clients.base import shared_connections
    from runbook.sandbox.server import serve_in_thread

    peers: list[int] = []

    async def app(scope, receive, send) -> None:  # answers with the caller's port
        peers.append(scope["client"][1])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    server = serve_in_thread(app)

    async def two_calls() -> None:
        for _ in range(2):
            async with BaseClient(server.url) as client:
                await client._json("GET", "/x")

    async def inside() -> None:
        async with shared_connections():
            await two_calls()
            async with shared_connections():  # nested: the outer pool serves
                await two_calls()

    try:
        asyncio.run(inside())
        shared = list(peers)
        peers.clear()
        asyncio.run(two_calls())
        own = list(peers)
    finally:
        server.stop()
    assert len(shared) == 4 and len(set(shared)) == 1
    assert len(own) == 2 and len(set(own)) == 2


async def test_a_client_with_its_own_transport_ignores_the_shared_pool() -> None:
    """A transport given to the client (tests, ASGI) is used even inside shared_connections."""
    from runbook.clients.base import shared_connections

    seen: list[str] = []

    def handler(req: httpx.Request) -> httpx.Response:
        seen.append(req.url.path)
        return httpx.Response(200, json={})

    async with shared_connections(), _client(handler) as client:
        await client._json("GET", "/mine")
    assert seen == ["/mine"]


def test_with_a_proxy_in_the_environment_clients_still_go_through_it(monkeypatch) -> None:
    """httpx honours HTTP_PROXY only for a client with its own transport, so inside
    shared_connections a proxied environment shares nothing: a call to a host this machine cannot
    resolve still reaches the proxy (here a local server that answers anything)."""
    from runbook.clients.base import shared_connections
    from runbook.sandbox.server import serve_in_thread

    seen: list[str] = []

    async def proxy(scope, receive, send) -> None:
        seen.append(scope["path"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    server = serve_in_thread(proxy)
    monkeypatch.setenv("HTTP_PROXY", server.url)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)

    async def call() -> None:
        async with shared_connections(), BaseClient("http://vendor.invalid") as client:
            await client._json("GET", "/through-the-proxy")

    try:
        asyncio.run(call())
    finally:
        server.stop()
    assert seen == ["/through-the-proxy"]
