"""Microsoft Teams: the same incident notices as Slack, as Adaptive Cards, once per key."""

from __future__ import annotations

from typing import Any

from prefect import task

from blocks import Teams
from tasks._retry import VENDOR_TASK
from tasks.context import ActionContext


@task(name="post-teams-card", **VENDOR_TASK)
async def post_teams_card(
    ctx: ActionContext,
    teams: Teams,
    purpose: str,
    title: str,
    facts: dict[str, str],
    text: str = "",
) -> dict[str, Any]:
    """Post one card to the Teams workflow webhook for this incident and ``purpose``."""

    async def apply() -> dict[str, Any]:
        async with teams.get_client() as client:
            await client.post_card(title, facts, text=text)
        return {"posted": True}

    outcome = await ctx.act(
        "post_message",
        "teams",
        {"title": title, "facts": facts},
        apply,
        key=ctx.key("teams", purpose),
    )
    return {"status": outcome.status.value, "already_done": outcome.already_done}
