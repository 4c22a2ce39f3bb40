"""Prefect block: a PagerDuty service reached through its Events API v2 integration."""

from __future__ import annotations

from urllib.parse import urlsplit

import httpx
from prefect.blocks.core import Block
from pydantic import Field, SecretStr, field_validator, model_validator

from runbook.clients.pagerduty import DEFAULT_BASE_URL, PagerDutyClient


class PagerDuty(Block):
    """A PagerDuty service's Events API v2 routing key: page, acknowledge and resolve.

    Example:
        Load a stored block and page the on-call:
        ```python
        from blocks.pagerduty import PagerDuty

        pager_duty = PagerDuty.load("BLOCK_NAME")
        async with pager_duty.get_client() as client:
            await client.trigger("checkout is failing", pager_duty.default_source, "critical", "INC-42")
        ```
    """

    _block_type_name = "PagerDuty"
    _block_type_slug = "pagerduty-events-v2"
    _logo_url = "https://raw.githubusercontent.com/PrefectHQ/prefect/420d0d6a78bb6df1fc18bcf188fdad43c1d22ea9/assets/block-logos/pagerduty.png"  # type: ignore[assignment]
    _description = "A PagerDuty Events API v2 routing key to page the on-call about incidents."
    _documentation_url = "https://developer.pagerduty.com/docs/events-api-v2/trigger-events/"  # type: ignore[assignment]

    routing_key: SecretStr = Field(
        description="The Integration Key of the service's Events API v2 integration (32 characters).",
    )
    base_url: str = Field(
        default=DEFAULT_BASE_URL,
        description="The Events API root; the sandbox (http://127.0.0.1:8900/pagerduty) can stand in for drills.",
    )
    timeout: float = Field(
        default=10.0, gt=0, le=120, description="Seconds to wait for each PagerDuty call."
    )
    default_source: str = Field(
        default="runbook",
        description="The source named in alerts when the incident does not name one (a host or service).",
    )

    @field_validator("base_url")
    @classmethod
    def _base_url_is_http(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"base_url must be an http(s) URL, not {value!r}")
        return value.rstrip("/")

    @field_validator("default_source")
    @classmethod
    def _source_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("default_source is empty: name the host or service alerts come from")
        return value.strip()

    @model_validator(mode="after")
    def _key_form(self) -> PagerDuty:
        key = self.routing_key.get_secret_value().strip()
        if not key:
            raise ValueError(
                "routing_key is empty: copy the Integration Key of an Events API v2 integration"
            )
        if urlsplit(self.base_url).hostname == "events.pagerduty.com" and len(key) != 32:
            raise ValueError(
                f"routing_key has {len(key)} characters; an Events API v2 Integration Key has 32"
            )
        return self

    def get_client(self, *, transport: httpx.AsyncBaseTransport | None = None) -> PagerDutyClient:
        """A client for this service's routing key.

        Args:
            transport: an httpx transport for tests.

        Returns:
            A PagerDutyClient; use it as an async context manager to close it.
        """
        return PagerDutyClient(
            self.base_url,
            self.routing_key.get_secret_value().strip(),
            timeout=self.timeout,
            transport=transport,
        )
