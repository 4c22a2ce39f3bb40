"""Supabase clients: the Management API (``SupabaseClient``) and a project's data plane
(``SupabaseDataClient``).

The Management API allows 120 requests per minute per user and project, then answers 429 for the
rest of the minute; ``SupabaseClient`` keeps the last ``X-RateLimit-Remaining`` it saw, and a 429 is a
``SupabaseTransientError`` whose ``retry_after`` comes from Retry-After, else X-RateLimit-Reset.
Edge functions have no rollback endpoint: a rollback is a redeploy of the previous source.

The data-plane client probes: a 5xx, a 429 or a timeout is a ``ProbeResult`` with ``ok=False`` (that
is what the runbook's "test the function directly" wants to see), while a refused connection raises
``SupabaseTransientError`` and a rejected key or unknown function raises ``SupabasePermanentError``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, ClassVar, Self

import httpx
from pydantic import BaseModel, ConfigDict

from runbook.clients.base import RETRYABLE_STATUS, BaseClient, parse_retry_after, vendor_message
from runbook.errors import SupabasePermanentError, SupabaseTransientError

SUPABASE_API_URL = "https://api.supabase.com"
DEFAULT_SERVICES = ("auth", "db", "rest", "realtime", "storage")
STATS_INTERVALS = ("15min", "1hr", "3hr", "1day")

_HINTS = {
    400: "check the request parameters",
    401: "check the management token (a Supabase personal access token, sbp_...)",
    403: "the token has no access to this project; use a token of a member with that permission",
    404: "check the project ref and the function slug",
    422: "check the request body",
}


class EdgeFunction(BaseModel):
    """An edge function as the Management API describes it."""

    model_config = ConfigDict(extra="ignore")

    id: str
    slug: str
    name: str = ""
    status: str = "ACTIVE"
    version: int = 0
    created_at: int | None = None
    updated_at: int | None = None
    verify_jwt: bool | None = None
    import_map: bool | None = None
    entrypoint_path: str | None = None
    import_map_path: str | None = None


class ServiceHealth(BaseModel):
    """One service's health: ``status`` is ACTIVE_HEALTHY, UNHEALTHY or COMING_UP."""

    model_config = ConfigDict(extra="ignore")

    name: str
    healthy: bool
    status: str
    error: str | None = None
    info: dict[str, Any] | None = None


class FunctionStat(BaseModel):
    """One time bucket of ``functions.combined-stats`` (timestamp in µs since the epoch)."""

    model_config = ConfigDict(extra="ignore")

    timestamp: int | str
    requests_count: int = 0
    success_count: int = 0
    redirect_count: int = 0
    client_err_count: int = 0
    server_err_count: int = 0
    avg_execution_time: float = 0.0
    max_execution_time: float = 0.0

    @property
    def error_count(self) -> int:
        """Client and server errors together."""
        return self.client_err_count + self.server_err_count


class ProbeResult(BaseModel):
    """What a data-plane probe saw. ``status_code`` is None when the call timed out."""

    model_config = ConfigDict(extra="ignore")

    ok: bool
    status_code: int | None
    latency_ms: float
    body: Any = None
    timed_out: bool = False


def _iso(when: datetime) -> str:
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _reset_seconds(value: str | None) -> float | None:
    """Seconds until a rate-limit window resets: a delta, or an epoch in seconds or milliseconds."""
    if not value:
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    if number > 1e12:  # epoch milliseconds
        return max(0.0, number / 1000 - time.time())
    if number > 1e9:  # epoch seconds
        return max(0.0, number - time.time())
    return max(0.0, number)


class SupabaseClient(BaseClient):
    """The Supabase Management API for edge functions, health, logs and auth config.

    Args:
        base_url: the API root (``https://api.supabase.com``; the sandbox's ``.../supabase``).
        token: a personal access token (``sbp_...``) or OAuth token; never in error messages.
        timeout: seconds for every call.
        transport: an httpx transport for tests.
        max_retries: in-client retries of transient failures.
        max_retry_after: the longest wait honoured in-client; a longer 429 raises at once.

    Raises:
        SupabasePermanentError: when no token is given.
    """

    system: ClassVar[str] = "supabase"
    transient_error = SupabaseTransientError
    permanent_error = SupabasePermanentError

    def __init__(
        self,
        base_url: str = SUPABASE_API_URL,
        token: str = "",
        *,
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
        max_retries: int = 2,
        max_retry_after: float = 30.0,
    ) -> None:
        if not token:
            raise SupabasePermanentError("a Supabase management token is required (sbp_...)")
        super().__init__(
            base_url,
            headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
            timeout=timeout,
            transport=transport,
            max_retries=max_retries,
            max_retry_after=max_retry_after,
        )
        self.last_rate_limit_remaining: int | None = None
        self.last_rate_limit_reset: float | None = None

    def check_response(self, response: httpx.Response) -> None:
        """Note the rate-limit headers, then raise a typed error for a failed answer."""
        remaining = response.headers.get("x-ratelimit-remaining")
        if remaining is not None and remaining.strip().isdigit():
            self.last_rate_limit_remaining = int(remaining)
        reset = _reset_seconds(response.headers.get("x-ratelimit-reset"))
        if reset is not None:
            self.last_rate_limit_reset = reset
        if response.is_success:
            return
        status, msg = response.status_code, vendor_message(response)
        where = f"{response.request.method} {response.request.url.path}"
        if status in RETRYABLE_STATUS or status >= 500:
            retry_after = parse_retry_after(response.headers.get("retry-after"))
            if retry_after is None and status == 429:
                retry_after = reset
            raise self.transient_error(
                f"Supabase answered {status} to {where}: {msg}",
                status_code=status,
                vendor_message=msg,
                retry_after=retry_after,
            )
        hint = _HINTS.get(status, "check the request")
        raise self.permanent_error(
            f"Supabase answered {status} to {where}: {msg}; {hint}",
            status_code=status,
            vendor_message=msg,
        )

    async def list_functions(self, ref: str) -> list[EdgeFunction]:
        """Every edge function of project ``ref``."""
        data = await self._json("GET", f"/v1/projects/{ref}/functions")
        return [EdgeFunction.model_validate(item) for item in data or []]

    async def get_function(self, ref: str, slug: str) -> EdgeFunction:
        """One edge function; SupabasePermanentError (404) when there is none by that slug."""
        data = await self._json("GET", f"/v1/projects/{ref}/functions/{slug}")
        return EdgeFunction.model_validate(data)

    async def get_function_body(self, ref: str, slug: str) -> bytes:
        """The current source (body) of an edge function, as bytes."""
        response = await self._request("GET", f"/v1/projects/{ref}/functions/{slug}/body")
        return response.content

    async def deploy_function(
        self,
        ref: str,
        slug: str,
        files: dict[str, bytes],
        *,
        entrypoint_path: str = "index.ts",
        verify_jwt: bool = True,
        name: str | None = None,
    ) -> EdgeFunction:
        """Deploy ``files`` as a new version of ``slug`` (created when new); the rollback path.

        Args:
            ref: the project ref.
            slug: the function's slug.
            files: file name -> content; ``entrypoint_path`` must be one of the names.
            entrypoint_path: the file Deno starts.
            verify_jwt: whether callers need a valid JWT.
            name: the display name (default: the slug).

        Returns:
            The function with its new version.

        Raises:
            SupabasePermanentError: no files, or Supabase rejected the deploy (its message says why).
        """
        if not files:
            raise SupabasePermanentError(f"deploying {slug!r} needs at least one file")
        metadata = {
            "entrypoint_path": entrypoint_path,
            "name": name or slug,
            "verify_jwt": verify_jwt,
        }
        parts = [
            ("file", (fname, content, "application/typescript")) for fname, content in files.items()
        ]
        data = await self._json(
            "POST",
            f"/v1/projects/{ref}/functions/deploy",
            params={"slug": slug},
            data={"metadata": json.dumps(metadata)},
            files=parts,
        )
        return EdgeFunction.model_validate(data)

    async def health(
        self, ref: str, services: Iterable[str] = DEFAULT_SERVICES
    ) -> list[ServiceHealth]:
        """The health of the named services of project ``ref``."""
        query = {"services": ",".join(services)}
        data = await self._json("GET", f"/v1/projects/{ref}/health", params=query)
        return [ServiceHealth.model_validate(item) for item in data or []]

    async def logs(
        self, ref: str, sql: str, start: datetime, end: datetime
    ) -> list[dict[str, Any]]:
        """Rows of a logs query (``logs.all``) between ``start`` and ``end``.

        Raises:
            SupabasePermanentError: when the answer carries an ``error`` (a bad query).
        """
        params = {"sql": sql, "iso_timestamp_start": _iso(start), "iso_timestamp_end": _iso(end)}
        data = await self._json(
            "GET", f"/v1/projects/{ref}/analytics/endpoints/logs.all", params=params
        )
        data = data or {}
        error = data.get("error")
        if error:
            msg = error.get("message", str(error)) if isinstance(error, dict) else str(error)
            raise SupabasePermanentError(
                f"Supabase could not run the logs query: {msg}; check the SQL and the table name",
                vendor_message=str(msg),
            )
        return list(data.get("result") or [])

    async def function_stats(
        self, ref: str, function_id: str, interval: str = "15min"
    ) -> list[FunctionStat]:
        """Per-bucket invocation counts and execution times of one function, oldest first.

        Raises:
            SupabasePermanentError: when ``interval`` is not one Supabase accepts.
        """
        if interval not in STATS_INTERVALS:
            raise SupabasePermanentError(
                f"interval must be one of {STATS_INTERVALS}, not {interval!r}"
            )
        params = {"interval": interval, "function_id": function_id}
        path = f"/v1/projects/{ref}/analytics/endpoints/functions.combined-stats"
        data = await self._json("GET", path, params=params)
        return [FunctionStat.model_validate(row) for row in (data or {}).get("result") or []]

    async def get_auth_config(self, ref: str) -> dict[str, Any]:
        """The project's auth configuration (rate limits included)."""
        data = await self._json("GET", f"/v1/projects/{ref}/config/auth")
        return dict(data or {})

    async def update_auth_config(self, ref: str, changes: dict[str, Any]) -> dict[str, Any]:
        """Apply ``changes`` to the auth configuration; returns the whole new configuration."""
        data = await self._json("PATCH", f"/v1/projects/{ref}/config/auth", json=changes)
        return dict(data or {})


class SupabaseDataClient(BaseClient):
    """Probes of a project's data plane: auth health, the REST root, a direct function call.

    Args:
        base_url: the project URL (``https://<ref>.supabase.co``; the sandbox's ``.../supabase-data``).
        anon_key: the project's anon (or service role) key; sent as ``apikey`` and bearer token.
        timeout: seconds a probe may take before it counts as timed out.
        transport: an httpx transport for tests.
        max_retries: in-client retries of a refused connection (a probe reports, it does not insist).
    """

    system: ClassVar[str] = "supabase"
    transient_error = SupabaseTransientError
    permanent_error = SupabasePermanentError

    def __init__(
        self,
        base_url: str,
        anon_key: str,
        *,
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
        max_retries: int = 0,
    ) -> None:
        if not anon_key:
            raise SupabasePermanentError("a Supabase anon key is required for the data plane")
        super().__init__(
            base_url,
            headers={"apikey": anon_key, "Authorization": f"Bearer {anon_key}"},
            timeout=timeout,
            transport=transport,
            max_retries=max_retries,
        )

    async def __aenter__(self) -> Self:
        return self

    def check_response(self, response: httpx.Response) -> None:
        """A rejected key or a missing endpoint is permanent; any other answer is a result."""
        status = response.status_code
        if status in (401, 403, 404):
            msg = vendor_message(response)
            hint = "check the anon key" if status != 404 else "check the function slug and data_url"
            raise self.permanent_error(
                f"Supabase answered {status} to {response.request.method} "
                f"{response.request.url.path}: {msg}; {hint}",
                status_code=status,
                vendor_message=msg,
            )

    async def _probe(self, method: str, url: str, **kwargs: Any) -> ProbeResult:
        started = time.monotonic()
        try:
            response = await self._request(method, url, **kwargs)
        except SupabaseTransientError as exc:
            if not isinstance(exc.__cause__, httpx.TimeoutException | TimeoutError):
                raise
            elapsed = (time.monotonic() - started) * 1000
            return ProbeResult(ok=False, status_code=None, latency_ms=elapsed, timed_out=True)
        elapsed = (time.monotonic() - started) * 1000
        try:
            body: Any = response.json()
        except ValueError:
            body = response.text
        return ProbeResult(
            ok=response.is_success, status_code=response.status_code, latency_ms=elapsed, body=body
        )

    async def auth_health(self) -> ProbeResult:
        """GoTrue's health endpoint (``/auth/v1/health``)."""
        return await self._probe("GET", "/auth/v1/health")

    async def rest_root(self) -> ProbeResult:
        """PostgREST's root (``/rest/v1/``): answers while the API and the database are up."""
        return await self._probe("GET", "/rest/v1/")

    async def invoke_function(self, slug: str, payload: dict[str, Any]) -> ProbeResult:
        """Call edge function ``slug`` directly with a JSON ``payload``.

        Raises:
            SupabaseTransientError: the data plane cannot be reached (connection refused).
            SupabasePermanentError: the key is rejected or there is no such function.
        """
        return await self._probe("POST", f"/functions/v1/{slug}", json=payload)
