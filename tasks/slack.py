"""Slack: incident channel messages and the P0 war room. Each message is sent at most once per key."""

from __future__ import annotations

import re
from typing import Any

from prefect import task

from blocks import Slack
from tasks._retry import VENDOR_TASK
from tasks.context import ActionContext


def war_room_name(incident_id: int, title: str) -> str:
    """``inc-42-checkout-is-down``: Slack channel rules (lowercase, digits, - and _; at most 80)."""
    slug = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")
    return f"inc-{incident_id}-{slug}"[:80].rstrip("-")


@task(name="post-slack-message", **VENDOR_TASK)
async def post_slack_message(
    ctx: ActionContext, slack: Slack, purpose: str, text: str, channel: str | None = None
) -> dict[str, Any]:
    """Post ``text`` to the incident channel (or ``channel``) once for this incident and ``purpose``.

    ``purpose`` names the message in its idempotency key ("detected", "mitigated", "escalation-2" ...).
    """
    where = channel or slack.channel

    async def apply() -> dict[str, Any]:
        if slack.bot_token is None:
            async with slack.get_webhook_client() as hook:
                await hook.post(text)
            return {"channel": "webhook"}
        async with slack.get_client() as client:
            msg = await client.post_message(where, text)
        return {"channel": msg.channel, "ts": msg.ts}

    outcome = await ctx.act(
        "post_message",
        f"slack:{where}",
        {"channel": where, "text": text[:500]},
        apply,
        key=ctx.key("slack", purpose, where),
    )
    return {"status": outcome.status.value, "already_done": outcome.already_done, **outcome.result}


@task(name="open-war-room", **VENDOR_TASK)
async def open_war_room(ctx: ActionContext, slack: Slack, title: str) -> dict[str, Any]:
    """Create the incident's war-room channel once (an existing one with the name is reused)."""
    name = war_room_name(ctx.incident_id, title)
    if not slack.can_create_channels:
        return {
            "status": "skipped",
            "reason": "the Slack block has no bot token; a webhook cannot create channels",
        }

    async def apply() -> dict[str, Any]:
        async with slack.get_client() as client:
            channel = await client.create_channel(name)
        return {"id": channel.id, "name": channel.name}

    outcome = await ctx.act("open_war_room", f"slack:#{name}", {"name": name}, apply)
    return {"status": outcome.status.value, "already_done": outcome.already_done, **outcome.result}
