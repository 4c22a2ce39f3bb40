"""Prefect block: a Microsoft Teams channel reached through a Workflows webhook."""

from __future__ import annotations

from urllib.parse import urlsplit

import httpx
from prefect.blocks.core import Block
from pydantic import Field, SecretStr, field_validator

from runbook.clients.teams import TeamsClient


class Teams(Block):
    """A Teams channel's Workflows webhook ("Post to a channel when a webhook request is received").

    The URL carries its own signature (``sig=``), so it is stored as a secret.

    Example:
        Load a stored block and post a card:
        ```python
        from blocks.teams import Teams

        teams = Teams.load("BLOCK_NAME")
        async with teams.get_client() as client:
            await client.post_card("P1: checkout is failing", {"Severity": "P1"})
        ```
    """

    _block_type_name = "Teams"
    _block_type_slug = "teams-workflow-webhook"
    _logo_url = "https://raw.githubusercontent.com/PrefectHQ/prefect/420d0d6a78bb6df1fc18bcf188fdad43c1d22ea9/assets/block-logos/microsoft-teams.png"  # type: ignore[assignment]
    _description = "A Microsoft Teams Workflows webhook for incident cards."
    _documentation_url = "https://support.microsoft.com/en-us/office/create-incoming-webhooks-with-workflows-for-microsoft-teams-8ae491c7-0394-4861-ba59-055e33f75498"  # type: ignore[assignment]

    webhook_url: SecretStr = Field(
        description="The workflow's HTTP POST URL, signature (sig=) included, as Teams shows it.",
    )
    timeout: float = Field(
        default=10.0, gt=0, le=120, description="Seconds to wait for each Teams call."
    )

    @field_validator("webhook_url")
    @classmethod
    def _webhook_is_url(cls, value: SecretStr) -> SecretStr:
        parts = urlsplit(value.get_secret_value().strip())
        # the message never repeats the URL: it is a secret
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("webhook_url must be the workflow's http(s) URL")
        if "sig=" not in parts.query:
            raise ValueError(
                "webhook_url has no sig= parameter: copy the whole URL from the workflow"
            )
        return SecretStr(value.get_secret_value().strip())

    def get_client(self, *, transport: httpx.AsyncBaseTransport | None = None) -> TeamsClient:
        """A client of the webhook.

        Args:
            transport: an httpx transport for tests.

        Returns:
            A TeamsClient; use it as an async context manager to close it.
        """
        return TeamsClient(
            self.webhook_url.get_secret_value(), timeout=self.timeout, transport=transport
        )
