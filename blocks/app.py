"""Prefect block: the product app's health URL and metrics endpoint."""

from __future__ import annotations

from typing import Literal

import httpx
from prefect.blocks.core import Block
from pydantic import Field, SecretStr, field_validator

from runbook.clients.app import AppClient


def _http_url(value: str, field: str) -> str:
    if not value.startswith(("http://", "https://")):
        raise ValueError(f"{field} must be a full http(s) URL, not {value!r}")
    return value


class AppEndpoint(Block):
    """The product app as its users reach it: a health URL and, optionally, Prometheus metrics.

    Example:
        Probe the app and scrape its metrics:
        ```python
        from blocks.app import AppEndpoint

        app_endpoint = AppEndpoint.load("BLOCK_NAME")
        async with app_endpoint.get_client() as client:
            check = await client.health()
            snapshot = await client.scrape()
        ```
    """

    _block_type_name = "App Endpoint"
    _block_type_slug = "app-endpoint"
    _logo_url = "https://prometheus.io/assets/prometheus_logo_grey.svg"  # type: ignore[assignment]
    _description = "The product app's health URL and Prometheus metrics endpoint."
    _documentation_url = "https://prometheus.io/docs/instrumenting/exposition_formats/"  # type: ignore[assignment]

    health_url: str = Field(
        description="The full URL of the app's health check (e.g. https://example.com/api/health)."
    )
    metrics_url: str | None = Field(
        default=None,
        description="The full URL of the app's Prometheus metrics page; empty when it has none.",
    )
    metrics_kind: Literal["exposition"] = Field(
        default="exposition",
        description="How the metrics are served: Prometheus text exposition is the only kind so far.",
    )
    bearer_token: SecretStr | None = Field(
        default=None,
        description="A bearer token sent to both URLs, when they are not public.",
    )
    timeout: float = Field(
        default=5.0,
        gt=0,
        le=60,
        description="Seconds to wait for an answer; a slower health check counts as no answer.",
    )

    @field_validator("health_url")
    @classmethod
    def _health_url_is_http(cls, value: str) -> str:
        return _http_url(value.strip(), "health_url")

    @field_validator("metrics_url")
    @classmethod
    def _metrics_url_is_http(cls, value: str | None) -> str | None:
        value = (value or "").strip() or None
        return _http_url(value, "metrics_url") if value else None

    def get_client(self, *, transport: httpx.AsyncBaseTransport | None = None) -> AppClient:
        """A client for the app's health and metrics.

        Args:
            transport: an httpx transport for tests.

        Returns:
            An AppClient; use it as an async context manager to close it.
        """
        token = self.bearer_token.get_secret_value() if self.bearer_token else None
        return AppClient(
            self.health_url,
            self.metrics_url,
            token=token,
            timeout=self.timeout,
            transport=transport,
        )
