"""Microsoft Teams client: post Adaptive Cards to a Workflows (Power Automate) webhook.

The webhook URL carries its signature (``sig=``) and is the credential, so no message of this
module names it: errors name only the host. 429 and 5xx are transient; 400, 401, 403, 404 and 413
are permanent, with Teams' own error code and what to fix.
"""

from __future__ import annotations

import json
from typing import Any

import httpx

from runbook.clients.base import (
    RETRYABLE_STATUS,
    SecretURLClient,
    parse_retry_after,
    vendor_message,
)
from runbook.errors import TeamsPermanentError, TeamsTransientError

MAX_BYTES = 28 * 1024
CARD_TYPE = "application/vnd.microsoft.card.adaptive"
_HINTS = {
    400: "the card does not match what the workflow expects",
    401: "check Teams.webhook_url: its signature is wrong or was regenerated",
    403: "check Teams.webhook_url: the workflow's owner may have lost access",
    404: "check Teams.webhook_url: the workflow was deleted or turned off",
    413: f"the card is over {MAX_BYTES // 1024} KB: shorten it",
}


def adaptive_card(
    title: str, facts: dict[str, str], text: str = "", link: str | None = None
) -> dict[str, Any]:
    """A Teams message with one Adaptive Card 1.2: a bold title, text, a fact set, a link.

    Args:
        title: the card's heading.
        facts: label -> value pairs, shown as a two-column fact set.
        text: a paragraph under the title (Markdown subset).
        link: a URL for an "Open" button.

    Returns:
        The message payload for the webhook.
    """
    body: list[dict[str, Any]] = [
        {"type": "TextBlock", "text": title, "weight": "Bolder", "size": "Medium", "wrap": True}
    ]
    if text:
        body.append({"type": "TextBlock", "text": text, "wrap": True})
    if facts:
        body.append(
            {"type": "FactSet", "facts": [{"title": k, "value": v} for k, v in facts.items()]}
        )
    content: dict[str, Any] = {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.2",
        "body": body,
    }
    if link:
        content["actions"] = [{"type": "Action.OpenUrl", "title": "Open", "url": link}]
    return {
        "type": "message",
        "attachments": [{"contentType": CARD_TYPE, "contentUrl": None, "content": content}],
    }


class TeamsClient(SecretURLClient):
    """Async client of one Teams Workflows webhook.

    Args:
        webhook_url: the workflow's HTTP trigger URL, signature included (a secret).
        timeout: seconds for every call.
        transport: an httpx transport for tests.
        max_retries: in-client retries of transient failures.

    Raises:
        TeamsTransientError: 429, 5xx, timeouts, after the retries.
        TeamsPermanentError: other 4xx or a card over 28 KB; the message says what to fix.
    """

    system = "teams"
    transient_error = TeamsTransientError
    permanent_error = TeamsPermanentError
    label = "Teams webhook"
    url_field = "Teams.webhook_url"

    def check_response(self, response: httpx.Response) -> None:
        """Teams' status codes, without the URL."""
        if response.is_success:
            return
        status = response.status_code
        msg = vendor_message(response)
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        text = f"the Teams webhook at {self._host} answered {status}: {msg}"
        if status in RETRYABLE_STATUS:
            raise TeamsTransientError(
                text, status_code=status, vendor_message=msg, retry_after=retry_after
            )
        hint = _HINTS.get(status, "check Teams.webhook_url and the card")
        raise TeamsPermanentError(f"{text} ({hint})", status_code=status, vendor_message=msg)

    async def post(self, payload: dict[str, Any]) -> None:
        """Post a ready-made message payload (``{"type": "message", "attachments": [...]}``).

        Raises:
            TeamsPermanentError: the payload is over 28 KB (Teams would refuse it).
        """
        body = json.dumps(payload, separators=(",", ":")).encode()
        if len(body) > MAX_BYTES:
            raise TeamsPermanentError(
                f"the Teams message is {len(body)} bytes; Teams accepts at most {MAX_BYTES}:"
                " shorten the text or facts"
            )
        await self._request(
            "POST", self._target, content=body, headers={"Content-Type": "application/json"}
        )

    async def post_card(
        self, title: str, facts: dict[str, str], text: str = "", link: str | None = None
    ) -> None:
        """Post an Adaptive Card 1.2 with a title, text, facts and an optional link button.

        Args:
            title: the card's heading.
            facts: label -> value pairs.
            text: a paragraph under the title.
            link: a URL for an "Open" button (the incident, a dashboard).
        """
        await self.post(adaptive_card(title, facts, text, link))
