"""Prefect block: where and how the runbook talks in Slack (bot token, incoming webhook, or both)."""

from __future__ import annotations

from urllib.parse import urlsplit

import httpx
from prefect.blocks.core import Block
from pydantic import Field, SecretStr, field_validator, model_validator

from runbook.clients.slack import DEFAULT_BASE_URL, SlackClient, SlackWebhookClient
from runbook.errors import SlackPermanentError


class Slack(Block):
    """A Slack workspace's bot token and default channel, and/or an incoming webhook.

    With a bot token the runbook can post to any channel the bot is in, reply in threads and create
    war-room channels (scopes ``chat:write``, ``channels:manage``, ``channels:read``,
    ``groups:read``). With only a webhook it can post to the webhook's channel.

    Example:
        Load a stored block and post to its channel:
        ```python
        from blocks.slack import Slack

        slack = Slack.load("BLOCK_NAME")
        async with slack.get_client() as client:
            await client.post_message(slack.channel, "P1: checkout is failing")
        ```
    """

    _block_type_name = "Slack"
    _block_type_slug = "slack-channel"
    _logo_url = "https://raw.githubusercontent.com/PrefectHQ/prefect/420d0d6a78bb6df1fc18bcf188fdad43c1d22ea9/assets/block-logos/slack.png"  # type: ignore[assignment]
    _description = "A Slack bot token and channel (or an incoming webhook) for incident messages."
    _documentation_url = "https://api.slack.com/methods/chat.postMessage"  # type: ignore[assignment]

    bot_token: SecretStr | None = Field(
        default=None,
        description="The Slack app's bot token (xoxb-...), from OAuth & Permissions; empty for webhook only.",
    )
    channel: str = Field(
        default="#alerts",
        description="The default channel for incident messages: #name or a channel id (C...).",
    )
    webhook_url: SecretStr | None = Field(
        default=None,
        description="An incoming webhook URL (https://hooks.slack.com/services/...); empty to use the bot token.",
    )
    base_url: str = Field(
        default=DEFAULT_BASE_URL,
        description="The Web API root; the sandbox (http://127.0.0.1:8900/slack) can stand in for drills.",
    )
    timeout: float = Field(
        default=10.0, gt=0, le=120, description="Seconds to wait for each Slack call."
    )

    @field_validator("channel")
    @classmethod
    def _channel_form(cls, value: str) -> str:
        value = value.strip()
        if not value or not (value.startswith("#") or value[:1] in ("C", "G")):
            raise ValueError(f"channel must be #name or a channel id (C...), not {value!r}")
        return value

    @field_validator("base_url")
    @classmethod
    def _base_url_is_http(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"base_url must be an http(s) URL, not {value!r}")
        return value.rstrip("/")

    @field_validator("webhook_url")
    @classmethod
    def _webhook_is_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value().strip():
            return None
        parts = urlsplit(value.get_secret_value().strip())
        # the message never repeats the URL: it is a secret
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(
                "webhook_url must be an http(s) URL (https://hooks.slack.com/services/...)"
            )
        if parts.hostname == "hooks.slack.com" and not parts.path.startswith("/services/"):
            raise ValueError(
                "webhook_url must look like https://hooks.slack.com/services/T.../B.../..."
            )
        return value

    @model_validator(mode="after")
    def _needs_a_credential(self) -> Slack:
        token = self.bot_token.get_secret_value().strip() if self.bot_token else ""
        if not token and self.webhook_url is None:
            raise ValueError("set bot_token (xoxb-...) or webhook_url: Slack needs one of them")
        if (
            token
            and urlsplit(self.base_url).hostname == "slack.com"
            and not token.startswith("xoxb-")
        ):
            raise ValueError(
                "bot_token must be a bot token starting with xoxb- (OAuth & Permissions >"
                " Bot User OAuth Token); user (xoxp-) and app (xapp-) tokens do not fit"
            )
        return self

    @property
    def can_create_channels(self) -> bool:
        """True when a bot token is set (a webhook cannot create channels)."""
        return bool(self.bot_token and self.bot_token.get_secret_value().strip())

    def get_client(self, *, transport: httpx.AsyncBaseTransport | None = None) -> SlackClient:
        """A Web API client with the bot token.

        Args:
            transport: an httpx transport for tests.

        Returns:
            A SlackClient; use it as an async context manager to close it.

        Raises:
            SlackPermanentError: the block has no bot token (webhook only).
        """
        if not self.can_create_channels or self.bot_token is None:
            raise SlackPermanentError(
                "this Slack block has no bot_token: set one, or use get_webhook_client()"
            )
        return SlackClient(
            self.base_url,
            self.bot_token.get_secret_value().strip(),
            timeout=self.timeout,
            transport=transport,
        )

    def get_webhook_client(
        self, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> SlackWebhookClient:
        """A client of the incoming webhook.

        Args:
            transport: an httpx transport for tests.

        Returns:
            A SlackWebhookClient; use it as an async context manager to close it.

        Raises:
            SlackPermanentError: the block has no webhook_url.
        """
        if self.webhook_url is None:
            raise SlackPermanentError(
                "this Slack block has no webhook_url: set one, or use get_client()"
            )
        return SlackWebhookClient(
            self.webhook_url.get_secret_value().strip(), timeout=self.timeout, transport=transport
        )
