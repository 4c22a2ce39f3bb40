"""Prefect block: an Atlassian Statuspage page and which component stands for which service."""

from __future__ import annotations

import httpx
from prefect.blocks.core import Block
from pydantic import Field, SecretStr, field_validator

from runbook.clients.statuspage import DEFAULT_BASE_URL, StatuspageClient


class Statuspage(Block):
    """A Statuspage page, its API key, and the map from our service names to its components.

    Example:
        Load a stored block and mark the API degraded:
        ```python
        from blocks.statuspage import Statuspage

        statuspage = Statuspage.load("BLOCK_NAME")
        async with statuspage.get_client() as client:
            await client.set_component_status(statuspage.component_map["api"], "degraded_performance")
        ```
    """

    _block_type_name = "Statuspage"
    _block_type_slug = "statuspage-page"
    _logo_url = (
        "https://wac-cdn.atlassian.com/assets/img/favicons/statuspage/apple-touch-icon-180x180.png"  # type: ignore[assignment]
    )
    _description = (
        "An Atlassian Statuspage page (API key, page id, component map) for customer-facing status."
    )
    _documentation_url = "https://developer.statuspage.io/"  # type: ignore[assignment]

    api_key: SecretStr = Field(
        description="A Statuspage API key (user menu > API info); sent as Authorization: OAuth.",
    )
    page_id: str = Field(description="The page's id, as shown on the API info page.")
    component_map: dict[str, str] = Field(
        default_factory=dict,
        description="Our service name (e.g. api, web, auth) -> the Statuspage component id that shows it.",
    )
    base_url: str = Field(
        default=DEFAULT_BASE_URL,
        description="The API root without /v1; the sandbox (http://127.0.0.1:8900/statuspage) can stand in.",
    )
    timeout: float = Field(
        default=10.0, gt=0, le=120, description="Seconds to wait for each Statuspage call."
    )

    @field_validator("api_key")
    @classmethod
    def _key_not_blank(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().strip():
            raise ValueError(
                "api_key is empty: create one under the Statuspage user menu > API info"
            )
        return value

    @field_validator("page_id")
    @classmethod
    def _page_not_blank(cls, value: str) -> str:
        if not value.strip() or "/" in value:
            raise ValueError(f"page_id must be the page's id from the API info page, not {value!r}")
        return value.strip()

    @field_validator("component_map")
    @classmethod
    def _map_values(cls, value: dict[str, str]) -> dict[str, str]:
        blank = sorted(name for name, cid in value.items() if not str(cid).strip())
        if blank:
            raise ValueError(f"component_map has no component id for: {', '.join(blank)}")
        return {name: str(cid).strip() for name, cid in value.items()}

    @field_validator("base_url")
    @classmethod
    def _base_url_is_http(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"base_url must be an http(s) URL, not {value!r}")
        return value.rstrip("/").removesuffix("/v1")

    def get_client(self, *, transport: httpx.AsyncBaseTransport | None = None) -> StatuspageClient:
        """A client for this page.

        Args:
            transport: an httpx transport for tests.

        Returns:
            A StatuspageClient; use it as an async context manager to close it.
        """
        return StatuspageClient(
            self.base_url,
            self.api_key.get_secret_value().strip(),
            self.page_id,
            timeout=self.timeout,
            transport=transport,
        )
