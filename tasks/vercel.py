"""Vercel: what is in production, recent deployments, and the instant rollback."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from prefect import task

from blocks import VercelProject
from runbook.errors import VercelPermanentError
from tasks._retry import VENDOR_TASK
from tasks.context import ActionContext


def _dep(d: Any) -> dict[str, Any]:
    commit = d.meta.get("githubCommitMessage") or ""
    return {"id": d.uid, "url": d.url, "created": d.created.isoformat(), "commit": commit[:120]}


@task(name="list-production-deployments", **VENDOR_TASK)
async def list_production_deployments(project: VercelProject, limit: int = 10) -> dict[str, Any]:
    """Recent READY production deployments, newest first, and which one is live (``vercel ls``)."""
    async with project.get_client() as client:
        deployments = await client.list_deployments(project.project_id, limit=limit)
        live = await client.get_project(project.project_id)
    return {"live": live.production_deployment_id, "deployments": [_dep(d) for d in deployments]}


@task(name="rollback-deployment", **VENDOR_TASK)
async def rollback_deployment(
    ctx: ActionContext, project: VercelProject, before: datetime, reason: str
) -> dict[str, Any]:
    """Roll production back to the newest good deployment created before ``before``, once.

    Returns:
        {"status", "from", "to", "already_done"}; status "skipped" in a dry run, "nothing_to_do" when
        no earlier deployment exists.

    Raises:
        VercelPermanentError: the project or token is wrong (the message says which).
    """
    async with project.get_client() as client:
        live = (await client.get_project(project.project_id)).production_deployment_id
        target = await client.last_good_deployment(project.project_id, before)
        if target is None:
            return {"status": "nothing_to_do", "from": live, "to": None, "already_done": False}
        plan = {"project": project.project_id, "from": live, "to": target.uid, "reason": reason}

        async def apply() -> dict[str, Any]:
            await client.rollback(project.project_id, target.uid, description=reason[:250])
            return {"from": live, "to": target.uid, "url": target.url}

        outcome = await ctx.act(
            "rollback_deployment",
            project.project_id,
            plan,
            apply,
            key=ctx.key("rollback_deployment", project.project_id, target.uid),
        )
    return {
        "status": outcome.status.value,
        "from": live,
        "to": target.uid,
        "already_done": outcome.already_done,
    }


@task(name="verify-production", **VENDOR_TASK)
async def verify_production(project: VercelProject, expected_id: str) -> dict[str, Any]:
    """Check that production now serves ``expected_id``.

    Raises:
        VercelPermanentError: the project does not exist.
    """
    async with project.get_client() as client:
        live = (await client.get_project(project.project_id)).production_deployment_id
    if live is None:
        raise VercelPermanentError(f"project {project.project_id} has no production deployment")
    return {"ok": live == expected_id, "live": live, "expected": expected_id}
