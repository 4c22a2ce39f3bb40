"""The product app's own endpoints: its health URL and its Prometheus ``/metrics`` page.

A health check's answer is a *result*: a 503 "degraded" is what the runbook wants to know, so it
comes back as ``HealthCheck(ok=False)``. Only getting no answer (timeout, connection refused) is an
error, and a transient one. Scrapes are parsed into ``runbook.metrics.MetricsSnapshot``.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field

from runbook.clients.base import BaseClient
from runbook.clock import Clock, SystemClock
from runbook.errors import AppPermanentError, AppTransientError
from runbook.metrics import MetricsSnapshot, parse_exposition

_HEALTHY_WORDS = frozenset({"ok", "pass", "healthy", "up", "green"})


class HealthCheck(BaseModel):
    """One probe of the health URL."""

    model_config = ConfigDict(extra="ignore")

    ok: bool = Field(description="2xx and a body that does not say otherwise.")
    status_code: int
    latency_ms: float
    body: Any = None
    checked_at: datetime | None = None

    @property
    def status(self) -> str | None:
        """The body's own ``status`` word ("ok", "degraded", "down"), when it has one."""
        if isinstance(self.body, dict) and isinstance(self.body.get("status"), str):
            return str(self.body["status"])
        return None


class AppClient(BaseClient):
    """Probe the product app's health URL and scrape its metrics.

    Args:
        health_url: the full health URL (``https://example.com/api/health``).
        metrics_url: the full Prometheus exposition URL, if the app has one.
        token: a bearer token, for apps whose health or metrics are not public.
        timeout: seconds for every call; a slower health answer counts as no answer.
        transport: an httpx transport for tests.
        clock: what ``taken_at``/``checked_at`` read (the world clock in drills).
        max_retries: in-client retries when there is no answer.

    Raises:
        AppTransientError: no answer (timeout, connection error), or a scrape answered 429/5xx.
        AppPermanentError: a scrape answered another 4xx or text that is not exposition format.
    """

    system = "app"
    transient_error = AppTransientError
    permanent_error = AppPermanentError

    def __init__(
        self,
        health_url: str,
        metrics_url: str | None = None,
        *,
        token: str | None = None,
        timeout: float = 5.0,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Clock | None = None,
        max_retries: int = 2,
    ) -> None:
        self.health_url = httpx.URL(health_url)
        if self.health_url.scheme not in ("http", "https") or not self.health_url.host:
            raise AppPermanentError(f"health_url must be an http(s) URL, not {health_url!r}")
        self.metrics_url = httpx.URL(metrics_url) if metrics_url else None
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        origin = f"{self.health_url.scheme}://{self.health_url.netloc.decode()}"
        super().__init__(
            origin, headers=headers, timeout=timeout, transport=transport, max_retries=max_retries
        )
        self.clock: Clock = clock or SystemClock()

    def _is_health(self, url: httpx.URL) -> bool:
        return url.host == self.health_url.host and url.path == self.health_url.path

    def check_response(self, response: httpx.Response) -> None:
        """Any answer of the health URL is a result; other answers are checked as usual."""
        if self._is_health(response.request.url):
            return
        super().check_response(response)

    async def health(self) -> HealthCheck:
        """Probe the health URL once.

        Returns:
            The result; ``ok`` is False for a non-2xx answer or a body whose status is not healthy.

        Raises:
            AppTransientError: no answer within the timeout, or the app cannot be reached.
        """
        checked_at = self.clock.now()
        started = time.perf_counter()
        response = await self._request("GET", str(self.health_url))
        latency_ms = (time.perf_counter() - started) * 1000.0
        try:
            body: Any = response.json()
        except ValueError:
            body = response.text[:2000]
        ok = response.is_success
        if ok and isinstance(body, dict) and isinstance(body.get("status"), str):
            ok = body["status"].lower() in _HEALTHY_WORDS
        return HealthCheck(
            ok=ok,
            status_code=response.status_code,
            latency_ms=latency_ms,
            body=body,
            checked_at=checked_at,
        )

    async def scrape(self, taken_at: datetime | None = None) -> MetricsSnapshot:
        """Scrape the metrics URL.

        Args:
            taken_at: when the scrape counts as taken; the client's clock's now by default.

        Returns:
            Every sample of the exposition.

        Raises:
            AppPermanentError: no metrics_url, or an answer that is not exposition format.
            AppTransientError: no answer, 429 or 5xx after the retries.
        """
        if self.metrics_url is None:
            raise AppPermanentError("this app has no metrics_url; set AppEndpoint.metrics_url")
        when = taken_at or self.clock.now()
        response = await self._request(
            "GET", str(self.metrics_url), headers={"Accept": "text/plain;version=0.0.4"}
        )
        try:
            return parse_exposition(response.text, when)
        except ValueError as exc:
            raise AppPermanentError(
                f"{self.metrics_url} did not answer Prometheus text exposition format ({exc}); "
                "check AppEndpoint.metrics_url"
            ) from exc
