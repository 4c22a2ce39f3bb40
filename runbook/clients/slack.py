"""Slack clients: the Web API with a bot token, and incoming webhooks.

The Web API answers HTTP 200 with ``{"ok": false, "error": "<code>"}`` for most failures, so
``SlackClient.check_response`` reads the body: ``ratelimited`` is transient (with Retry-After);
auth codes say to check the bot token; channel codes say to invite the bot or fix the channel;
any other code is permanent and named. HTTP 429 and 5xx are transient as everywhere.

An incoming webhook's URL is itself the credential, so ``SlackWebhookClient`` never puts its path in
a message: errors name only the host.
"""

from __future__ import annotations

from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict

from runbook.clients.base import RETRYABLE_STATUS, BaseClient, SecretURLClient, parse_retry_after
from runbook.errors import SlackPermanentError, SlackTransientError

DEFAULT_BASE_URL = "https://slack.com"
AUTH_ERRORS = frozenset(
    {"invalid_auth", "not_authed", "account_inactive", "token_revoked", "token_expired"}
)
CHANNEL_ERRORS = frozenset({"channel_not_found", "not_in_channel", "is_archived"})
_WEBHOOK_REASONS = {
    "invalid_token": "the webhook URL's secret is wrong or was revoked: copy the URL again from the Slack app",
    "no_service": "the webhook was removed or disabled: create a new incoming webhook",
    "channel_not_found": "the webhook's channel no longer exists: create a new incoming webhook",
    "channel_is_archived": "the webhook's channel is archived: unarchive it or create a new webhook",
    "no_text": "the message has neither text nor blocks",
    "invalid_payload": "the message is not valid JSON for Slack",
}


class SlackMessage(BaseModel):
    """A posted message: the channel id it landed in and its ``ts`` (its id, for threads)."""

    model_config = ConfigDict(extra="ignore")

    channel: str
    ts: str


class SlackChannel(BaseModel):
    """A conversation as Slack describes it."""

    model_config = ConfigDict(extra="ignore")

    id: str
    name: str
    is_private: bool = False
    is_archived: bool = False
    is_member: bool | None = None


def _hint(code: str) -> str:
    if code in AUTH_ERRORS:
        return "check the Slack bot token (Slack.bot_token): it is wrong, revoked or its app uninstalled"
    if code == "not_in_channel":
        return "invite the bot to the channel (/invite @<bot>) or fix Slack.channel"
    if code in CHANNEL_ERRORS:
        return "fix the channel (Slack.channel): use an existing, unarchived channel the bot is in"
    if code == "missing_scope":
        return "add the missing OAuth scope to the Slack app and reinstall it"
    return "see https://api.slack.com/methods for what this code means"


class SlackClient(BaseClient):
    """Async client of the Slack Web API with a bot token.

    Args:
        base_url: the API root (``https://slack.com``; the sandbox's ``.../slack``).
        token: a bot token (``xoxb-...``), sent as ``Authorization: Bearer``; never logged.
        timeout: seconds for every call.
        transport: an httpx transport for tests.
        max_retries: in-client retries of transient failures.

    Raises:
        SlackTransientError: ``ratelimited``, HTTP 429, 5xx, timeouts, after the retries.
        SlackPermanentError: any other ``ok: false`` code or 4xx; the message says what to fix.
    """

    system = "slack"
    transient_error = SlackTransientError
    permanent_error = SlackPermanentError

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        token: str = "",
        *,
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
        max_retries: int = 2,
    ) -> None:
        if not token:
            raise SlackPermanentError("a Slack bot token is required (Slack.bot_token)")
        super().__init__(
            base_url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout,
            transport=transport,
            max_retries=max_retries,
        )

    def check_response(self, response: httpx.Response) -> None:
        """HTTP errors as usual, then Slack's in-body ``ok: false`` codes."""
        method = response.request.url.path.rsplit("/", 1)[-1]
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        try:
            data = response.json()
        except ValueError:
            data = None
        code = str(data.get("error") or "") if isinstance(data, dict) else ""
        status = response.status_code
        if status == 429 or code == "ratelimited":
            raise SlackTransientError(
                f"Slack rate-limited {method}; retry after {retry_after or 'a while'} s",
                status_code=status,
                vendor_message="ratelimited",
                retry_after=retry_after,
            )
        if not response.is_success:
            if status in RETRYABLE_STATUS:
                raise SlackTransientError(
                    f"Slack answered {status} to {method}",
                    status_code=status,
                    retry_after=retry_after,
                )
            raise SlackPermanentError(
                f"Slack answered {status} to {method}: {code or response.text[:200]}",
                status_code=status,
                vendor_message=code or None,
            )
        if isinstance(data, dict) and data.get("ok") is False:
            raise SlackPermanentError(
                f"Slack refused {method}: {code or 'unknown error'} ({_hint(code)})",
                status_code=status,
                vendor_message=code or None,
            )

    async def _call(self, method: str, payload: dict[str, Any]) -> dict[str, Any]:
        data = await self._json("POST", f"/api/{method}", json=payload)
        return data if isinstance(data, dict) else {}

    async def post_message(
        self,
        channel: str,
        text: str,
        *,
        blocks: list[dict[str, Any]] | None = None,
        thread_ts: str | None = None,
    ) -> SlackMessage:
        """Post a message (``chat.postMessage``).

        Args:
            channel: a channel id (``C...``) or ``#name``.
            text: the message text (also the notification fallback when ``blocks`` are given).
            blocks: Block Kit blocks.
            thread_ts: the ``ts`` of a message to reply to in its thread.

        Returns:
            The channel id and ``ts`` of the posted message.
        """
        payload: dict[str, Any] = {"channel": channel, "text": text}
        if blocks:
            payload["blocks"] = blocks
        if thread_ts:
            payload["thread_ts"] = thread_ts
        data = await self._call("chat.postMessage", payload)
        return SlackMessage.model_validate(data)

    async def channel_info(self, channel: str) -> SlackChannel:
        """A channel by id (``conversations.info``), or by ``#name`` through the channel list.

        Raises:
            SlackPermanentError: ``channel_not_found`` when there is no such channel.
        """
        if channel.startswith("#"):
            found = await self.find_channel(channel)
            if found is None:
                raise SlackPermanentError(
                    f"Slack refused conversations.info: channel_not_found ({_hint('channel_not_found')})",
                    vendor_message="channel_not_found",
                )
            return found
        data = await self._call("conversations.info", {"channel": channel})
        return SlackChannel.model_validate(data.get("channel") or {})

    async def find_channel(self, name: str) -> SlackChannel | None:
        """The channel named ``name`` (with or without ``#``) among those the bot can see."""
        name = name.removeprefix("#")
        cursor = ""
        while True:
            payload: dict[str, Any] = {"types": "public_channel,private_channel", "limit": 200}
            if cursor:
                payload["cursor"] = cursor
            data = await self._call("conversations.list", payload)
            for row in data.get("channels") or []:
                if row.get("name") == name:
                    return SlackChannel.model_validate(row)
            cursor = (data.get("response_metadata") or {}).get("next_cursor") or ""
            if not cursor:
                return None

    async def create_channel(self, name: str, *, is_private: bool = False) -> SlackChannel:
        """Create a channel, or return the existing one of that name (safe to retry).

        A retried create answers ``name_taken``: the channel then exists, so it is looked up
        and returned instead of failing.

        Args:
            name: lowercase letters, digits, ``-`` and ``_``; at most 80 characters.
            is_private: create a private channel.

        Returns:
            The created or existing channel.

        Raises:
            SlackPermanentError: a bad name, or the name is taken by a channel the bot cannot see.
        """
        name = name.removeprefix("#")
        try:
            data = await self._call(
                "conversations.create", {"name": name, "is_private": is_private}
            )
        except SlackPermanentError as exc:
            if exc.vendor_message != "name_taken":
                raise
            existing = await self.find_channel(name)
            if existing is None:
                raise SlackPermanentError(
                    f"Slack channel #{name} exists but the bot cannot see it (private or archived):"
                    " invite the bot to it or choose another name",
                    vendor_message="name_taken",
                ) from exc
            return existing
        return SlackChannel.model_validate(data.get("channel") or {})


class SlackWebhookClient(SecretURLClient):
    """Async client of one Slack incoming webhook.

    Args:
        webhook_url: the webhook's URL (a secret: it never appears in messages).
        timeout: seconds for every call.
        transport: an httpx transport for tests.
        max_retries: in-client retries of transient failures.

    Raises:
        SlackTransientError: 429, 5xx, timeouts, after the retries.
        SlackPermanentError: 400/403/404/410 with Slack's reason and what to fix.
    """

    system = "slack"
    transient_error = SlackTransientError
    permanent_error = SlackPermanentError
    label = "Slack webhook"
    url_field = "Slack.webhook_url"

    def check_response(self, response: httpx.Response) -> None:
        """Slack's webhook answers are plain-text reasons; map them without the URL."""
        if response.is_success:
            return
        status = response.status_code
        reason = response.text.strip()[:100]
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        if status in RETRYABLE_STATUS:
            raise SlackTransientError(
                f"the Slack webhook at {self._host} answered {status}",
                status_code=status,
                vendor_message=reason if status == 429 else None,
                retry_after=retry_after,
            )
        hint = _WEBHOOK_REASONS.get(reason, "check Slack.webhook_url")
        raise SlackPermanentError(
            f"the Slack webhook at {self._host} answered {status} {reason} ({hint})",
            status_code=status,
            vendor_message=reason,
        )

    async def post(self, text: str, blocks: list[dict[str, Any]] | None = None) -> None:
        """Post a message to the webhook's channel.

        Args:
            text: the message text (the notification fallback when ``blocks`` are given).
            blocks: Block Kit blocks.
        """
        payload: dict[str, Any] = {"text": text}
        if blocks:
            payload["blocks"] = blocks
        await self._request("POST", self._target, json=payload)
