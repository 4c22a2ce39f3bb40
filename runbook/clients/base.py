"""What every vendor client shares: one httpx.AsyncClient, one request method, typed errors.

A client subclass sets ``transient_error`` / ``permanent_error`` to its system's error classes and
may override ``check_response`` for vendors that report errors inside a 200 (Slack's ``ok:false``).

Transient failures (timeouts, connection errors, 429, 420, 5xx) are retried ``max_retries`` times with
exponential backoff and full jitter, honouring Retry-After (capped at ``max_retry_after``); past that
they raise the system's TransientError so the Prefect task's own retries take over. Anything else
raises the system's PermanentError at once, carrying the vendor's own message.
"""

from __future__ import annotations

import asyncio
import email.utils
import functools
import ssl
import time
import urllib.request
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from contextvars import ContextVar
from typing import Any, ClassVar, Self
from urllib.parse import urlsplit

import httpx
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_random_exponential,
)

from runbook.errors import PermanentError, RunbookError, TransientError

DEFAULT_TIMEOUT = 10.0
RETRYABLE_STATUS = frozenset({420, 429, 500, 502, 503, 504})


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP date); None when absent or bad."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (now if now is not None else time.time()))


def vendor_message(response: httpx.Response) -> str:
    """The vendor's own error text from a response body, short and without echoing headers."""
    try:
        data = response.json()
    except ValueError:
        return response.text[:300].strip()
    if isinstance(data, dict):
        for key in ("error", "message", "errors", "errorMessages", "status"):
            val = data.get(key)
            if isinstance(val, dict):
                return str(val.get("message") or val.get("code") or val)[:300]
            if isinstance(val, list) and val:
                return "; ".join(str(v) for v in val)[:300]
            if val:
                return str(val)[:300]
    return str(data)[:300]


@functools.cache
def shared_tls_context() -> ssl.SSLContext:
    """One verifying TLS context per process, shared by every vendor client.

    httpx builds a new context (loading the CA bundle) for each client it creates: 23 ms of CPU per
    client here, and a phase creates several at once. The context is built as httpx builds its
    default (certifi's bundle, or SSL_CERT_FILE / SSL_CERT_DIR), once, on first use.
    """
    return httpx.create_ssl_context()


#: the keep-alive pool the vendor clients made inside ``shared_connections`` send through, with
#: the event loop it belongs to (its connections cannot serve another loop)
_shared_pool: ContextVar[tuple[asyncio.AbstractEventLoop, httpx.AsyncHTTPTransport] | None] = (
    ContextVar("vendor_connection_pool", default=None)
)


class _Borrowed(httpx.AsyncBaseTransport):
    """A client's use of the shared pool: sends through it; closing the client leaves it open."""

    def __init__(self, pool: httpx.AsyncHTTPTransport) -> None:
        self._pool = pool

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self._pool.handle_async_request(request)

    async def aclose(self) -> None:
        return None  # shared_connections closes the pool


@asynccontextmanager
async def shared_connections() -> AsyncIterator[None]:
    """Vendor clients made inside (on this event loop) keep their connections in one pool.

    Each vendor task makes its own client, so without this every call opened a new connection
    (and, against a real vendor, a new TLS session): a phase that starts seven calls at once sent
    its first one only after all seven tasks had started, ~25 ms later, waiting to connect; and a
    call to a host the flow had just called paid the TCP and TLS handshakes again. Inside, a call
    to a host already called takes an idle connection to it (httpx's keep-alive pool; idle ones are
    dropped after 5 s). Nested uses share the outer pool; it is closed on exit. A client given its
    own transport (tests), or made on another event loop, is not affected; with a proxy in the
    environment (HTTP_PROXY, HTTPS_PROXY, ALL_PROXY) nothing is shared, since httpx applies those
    (and NO_PROXY) only to a client that builds its own transport.
    """
    if _shared_pool.get() is not None or _proxied():
        yield
        return
    pool = httpx.AsyncHTTPTransport(verify=shared_tls_context())
    token = _shared_pool.set((asyncio.get_running_loop(), pool))
    try:
        yield
    finally:
        _shared_pool.reset(token)
        await pool.aclose()


def _proxied() -> bool:
    """Whether the environment names a proxy for HTTP or HTTPS (what httpx would use)."""
    return any(urllib.request.getproxies().get(scheme) for scheme in ("http", "https", "all"))


def _borrowed_pool() -> _Borrowed | None:
    shared = _shared_pool.get()
    if shared is None:
        return None
    loop, pool = shared
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        return None
    return _Borrowed(pool) if running is loop else None


class BaseClient:
    """Base for every vendor client. Subclasses call ``self._request`` and parse the JSON.

    Args:
        base_url: the vendor's API root (the sandbox's ``http://127.0.0.1:8900/<vendor>`` in drills).
        headers: default headers (credentials go here; they never reach error messages).
        timeout: seconds for every call (connect, read, write, pool).
        transport: an httpx transport for tests (MockTransport, ASGITransport).
        max_retries: in-client retries of transient failures before raising.
        max_retry_after: the longest Retry-After honoured in-client; longer waits raise at once.
    """

    system: ClassVar[str] = "runbook"
    transient_error: ClassVar[type[TransientError]] = TransientError
    permanent_error: ClassVar[type[PermanentError]] = PermanentError

    def __init__(
        self,
        base_url: str,
        *,
        headers: Mapping[str, str] | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        transport: httpx.AsyncBaseTransport | None = None,
        max_retries: int = 2,
        max_retry_after: float = 30.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.max_retries = max_retries
        self.max_retry_after = max_retry_after
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            headers=dict(headers or {}),
            timeout=timeout,
            transport=transport or _borrowed_pool(),
            verify=shared_tls_context(),
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # --- hooks ---------------------------------------------------------------------------------
    def check_response(self, response: httpx.Response) -> None:
        """Raise a typed error for a failed response. Override for vendors with in-body errors."""
        if response.is_success:
            return
        status = response.status_code
        msg = vendor_message(response)
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        text = f"{self.system} answered {status} to {response.request.method} {response.request.url.path}: {msg}"
        if status in RETRYABLE_STATUS:
            raise self.transient_error(
                text, status_code=status, vendor_message=msg, retry_after=retry_after
            )
        raise self.permanent_error(text, status_code=status, vendor_message=msg)

    # --- the one request method ----------------------------------------------------------------
    async def _send_once(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        try:
            # httpx's timeouts are per phase (and ASGI transports ignore them): bound the whole call too
            async with asyncio.timeout(self.timeout):
                response = await self._http.request(method, url, **kwargs)
        except (httpx.TimeoutException, TimeoutError) as exc:
            raise self.transient_error(
                f"{self.system} did not answer {method} {url} within the timeout"
            ) from exc
        except httpx.TransportError as exc:
            raise self.transient_error(
                f"cannot reach {self.system} at {self.base_url}: {type(exc).__name__}"
            ) from exc
        self.check_response(response)
        return response

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        backoff = wait_random_exponential(multiplier=0.2, max=5.0)(state)
        if isinstance(exc, RunbookError) and exc.retry_after is not None:
            return max(exc.retry_after, backoff if exc.retry_after == 0 else 0.0)
        return backoff

    async def _request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """Send one request; retry transient failures; raise the system's typed errors."""

        def _retryable(exc: BaseException) -> bool:
            if not isinstance(exc, TransientError):
                return False
            return exc.retry_after is None or exc.retry_after <= self.max_retry_after

        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.max_retries + 1),
            wait=self._wait,
            retry=retry_if_exception(_retryable),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                return await self._send_once(method, url, **kwargs)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _json(self, method: str, url: str, **kwargs: Any) -> Any:
        """``_request`` and decode JSON; a non-JSON success body is a permanent error."""
        response = await self._request(method, url, **kwargs)
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError as exc:
            raise self.permanent_error(
                f"{self.system} answered {method} {url} with a body that is not JSON"
            ) from exc


class SecretURLClient(BaseClient):
    """Base for webhooks whose URL path is itself the credential (Slack incoming webhooks, Teams
    workflows): it is split off at construction and no message ever names more than the host.

    Subclasses set ``label`` ("Slack webhook") and ``url_field`` (the block field to fix).
    """

    label: ClassVar[str] = "webhook"
    url_field: ClassVar[str] = "webhook_url"

    def __init__(
        self,
        webhook_url: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        transport: httpx.AsyncBaseTransport | None = None,
        max_retries: int = 2,
    ) -> None:
        parts = urlsplit(webhook_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise self.permanent_error(
                f"the {self.label} URL is not an http(s) URL ({self.url_field})"
            )
        self._host = parts.hostname or ""
        self._target = parts.path + (f"?{parts.query}" if parts.query else "")
        super().__init__(
            f"{parts.scheme}://{parts.netloc}",
            timeout=timeout,
            transport=transport,
            max_retries=max_retries,
        )

    async def _send_once(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        # the base's messages name the path; here the path is the secret, so name the host only
        try:
            async with asyncio.timeout(self.timeout):
                response = await self._http.request(method, url, **kwargs)
        except (httpx.TimeoutException, TimeoutError) as exc:
            raise self.transient_error(
                f"the {self.label} at {self._host} did not answer within {self.timeout} s"
            ) from exc
        except httpx.TransportError as exc:
            raise self.transient_error(
                f"cannot reach the {self.label} at {self._host}: {type(exc).__name__}"
            ) from exc
        self.check_response(response)
        return response
