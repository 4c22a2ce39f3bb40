"""The ticket tracker (GitHub issues or Jira): the incident ticket, recent commits, closing."""

from __future__ import annotations

from typing import Any

from prefect import task

from blocks import GitHubRepository, JiraProject, ticket_client
from runbook.clients.github import GitHubClient
from tasks._retry import VENDOR_TASK
from tasks.context import ActionContext


def incident_label(incident_id: int) -> str:
    return f"incident-INC-{incident_id}"


@task(name="create-ticket", **VENDOR_TASK)
async def create_ticket(
    ctx: ActionContext,
    tracker: GitHubRepository | JiraProject,
    title: str,
    body: str,
    labels: list[str],
) -> dict[str, Any]:
    """Open the incident ticket once; the tracker is searched for the incident's label first."""
    label = incident_label(ctx.incident_id)

    async def apply() -> dict[str, Any]:
        async with ticket_client(tracker) as client:
            ticket, created = await client.ensure_issue(title, body, [*labels, label], label)
        return {
            "ref": ticket.ref,
            "key": ticket.key,
            "url": ticket.url,
            "found_existing": not created,
        }

    outcome = await ctx.act(
        "create_ticket", label, {"title": title, "labels": [*labels, label]}, apply
    )
    return {"status": outcome.status.value, "already_done": outcome.already_done, **outcome.result}


@task(name="close-ticket", **VENDOR_TASK)
async def close_ticket(
    ctx: ActionContext, tracker: GitHubRepository | JiraProject, ticket_key: str, comment: str
) -> dict[str, Any]:
    """Comment the resolution and close the ticket, once."""

    async def apply() -> dict[str, Any]:
        async with ticket_client(tracker) as client:
            ticket = await client.close_issue(ticket_key, comment=comment)
        return {"ref": ticket.ref, "closed": ticket.closed}

    outcome = await ctx.act(
        "close_ticket", incident_label(ctx.incident_id), {"key": ticket_key}, apply
    )
    return {"status": outcome.status.value, "already_done": outcome.already_done}


@task(name="recent-commits", **VENDOR_TASK)
async def recent_commits(repo: GitHubRepository, limit: int = 10) -> list[dict[str, Any]]:
    """The repository's last commits (``git log --oneline -10``)."""
    async with repo.get_client() as client:
        assert isinstance(client, GitHubClient)
        commits = await client.recent_commits(limit)
    return [
        {
            "sha": c.short_sha,
            "message": c.message.splitlines()[0][:120],
            "date": str(c.date) if c.date else None,
        }
        for c in commits
    ]


@task(name="comment-ticket", **VENDOR_TASK)
async def comment_ticket(
    ctx: ActionContext,
    tracker: GitHubRepository | JiraProject,
    ticket_key: str,
    purpose: str,
    body: str,
) -> dict[str, Any]:
    """Add a comment to the incident ticket, once per ``purpose`` (e.g. "rca": the RCA's link)."""

    async def apply() -> dict[str, Any]:
        async with ticket_client(tracker) as client:
            comment = await client.comment(ticket_key, body)
        return {"key": ticket_key, "url": comment.url}

    outcome = await ctx.act(
        "comment_ticket",
        incident_label(ctx.incident_id),
        {"key": ticket_key, "purpose": purpose},
        apply,
        key=ctx.key("comment_ticket", incident_label(ctx.incident_id), purpose),
    )
    return {"status": outcome.status.value, "already_done": outcome.already_done}
