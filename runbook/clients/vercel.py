"""Vercel REST API client: list and read deployments, read the project, instant rollback, promote.

Vercel answers errors as ``{"error": {"code", "message"}}``; 429 (with Retry-After) and 5xx are
transient, anything else permanent. Team resources need ``teamId`` on every call.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field, model_validator

from runbook.clients.base import BaseClient
from runbook.errors import VercelPermanentError, VercelTransientError

DEFAULT_BASE_URL = "https://api.vercel.com"
_HINTS = {
    401: "check VercelProject.token",
    403: "check VercelProject.token and team_id (the token must reach that team)",
    404: "check the project id and deployment id (and team_id for team projects)",
}


def _ms_to_datetime(value: Any) -> Any:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(value / 1000.0, tz=UTC)
    return value


class Deployment(BaseModel):
    """A deployment, normalized across Vercel's list (uid, state, created) and get (id,
    readyState, createdAt) shapes; ``created`` is a timezone-aware datetime."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    uid: str
    name: str = ""
    url: str = ""
    created: datetime
    state: str = Field("", description="READY, ERROR, BUILDING, QUEUED, INITIALIZING or CANCELED.")
    target: str | None = None
    project_id: str | None = Field(None, alias="projectId")
    is_rollback_candidate: bool | None = Field(None, alias="isRollbackCandidate")
    meta: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _normalize(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        data.setdefault("uid", data.get("id"))
        data["state"] = data.get("readyState") or data.get("state") or data.get("status") or ""
        data["created"] = _ms_to_datetime(data.get("created", data.get("createdAt")))
        return data

    @property
    def ready(self) -> bool:
        """True when the deployment finished building and can serve traffic."""
        return self.state == "READY"

    @property
    def commit_sha(self) -> str | None:
        """The git commit it was built from, when Vercel knows it."""
        return self.meta.get("githubCommitSha") or self.meta.get("gitlabCommitSha")

    @property
    def commit_message(self) -> str | None:
        """The commit message it was built from, when Vercel knows it."""
        return self.meta.get("githubCommitMessage") or self.meta.get("gitlabCommitMessage")


class Project(BaseModel):
    """A project and what serves its production domains now."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    id: str
    name: str
    targets: dict[str, Any] = Field(default_factory=dict)
    last_rollback_target: dict[str, Any] | None = Field(None, alias="lastRollbackTarget")
    last_alias_request: dict[str, Any] | None = Field(None, alias="lastAliasRequest")

    @property
    def production_deployment_id(self) -> str | None:
        """The id of the deployment serving production, if any."""
        production = self.targets.get("production") or {}
        return production.get("id") or production.get("uid")

    @property
    def production_url(self) -> str | None:
        """The deployment URL (not the domain) serving production, if any."""
        production = self.targets.get("production") or {}
        return production.get("url")

    @property
    def rolled_back(self) -> bool:
        """True while the project is in a rolled-back state (new deploys do not go live)."""
        return self.last_rollback_target is not None


class VercelClient(BaseClient):
    """Async client of the Vercel REST API.

    Args:
        base_url: the API root (``https://api.vercel.com``; the sandbox's ``.../vercel``).
        token: a Vercel access token (sent as ``Authorization: Bearer``; never logged).
        team_id: the team owning the project; sent as ``teamId`` on every call when set.
        timeout: seconds for every call.
        transport: an httpx transport for tests.
        max_retries: in-client retries of transient failures.

    Raises:
        VercelTransientError: timeouts, connection errors, 429 and 5xx after the retries.
        VercelPermanentError: any other error answer (wrong token, unknown id, bad parameter).
    """

    system = "vercel"
    transient_error = VercelTransientError
    permanent_error = VercelPermanentError

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        token: str = "",
        *,
        team_id: str | None = None,
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
        max_retries: int = 2,
    ) -> None:
        if not token:
            raise VercelPermanentError("a Vercel access token is required (VercelProject.token)")
        super().__init__(
            base_url,
            headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
            timeout=timeout,
            transport=transport,
            max_retries=max_retries,
        )
        self.team_id = team_id

    def check_response(self, response: httpx.Response) -> None:
        """Vercel's errors, with a hint on what to fix for the common permanent ones."""
        try:
            super().check_response(response)
        except VercelPermanentError as exc:
            hint = _HINTS.get(response.status_code)
            if not hint:
                raise
            raise VercelPermanentError(
                f"{exc.message} ({hint})",
                status_code=exc.status_code,
                vendor_message=exc.vendor_message,
            ) from exc

    def _params(self, **params: Any) -> dict[str, Any]:
        clean = {k: v for k, v in params.items() if v is not None}
        if self.team_id:
            clean["teamId"] = self.team_id
        return clean

    async def list_deployments(
        self,
        project_id: str,
        *,
        target: str | None = "production",
        state: str | None = "READY",
        limit: int = 20,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[Deployment]:
        """Deployments of a project, newest first.

        Args:
            project_id: the project's id (``prj_...``) or name.
            target: "production", "preview", or None for all.
            state: a readyState (or comma-separated list), or None for all.
            limit: at most this many (1-100).
            since: only deployments created after this time.
            until: only deployments created before this time.

        Returns:
            The deployments, newest first.
        """
        params = self._params(
            projectId=project_id,
            target=target,
            state=state,
            limit=limit,
            since=int(since.timestamp() * 1000) if since else None,
            until=int(until.timestamp() * 1000) if until else None,
        )
        data = await self._json("GET", "/v6/deployments", params=params)
        rows = (data or {}).get("deployments") or []
        deployments = [Deployment.model_validate(row) for row in rows]
        return sorted(deployments, key=lambda d: d.created, reverse=True)

    async def get_deployment(self, id_or_url: str) -> Deployment:
        """One deployment by id (``dpl_...``) or hostname (``web-abc.vercel.app``)."""
        key = id_or_url.removeprefix("https://").removeprefix("http://").rstrip("/")
        data = await self._json("GET", f"/v13/deployments/{key}", params=self._params())
        return Deployment.model_validate(data)

    async def get_project(self, id_or_name: str) -> Project:
        """The project, including which deployment serves production now."""
        data = await self._json("GET", f"/v9/projects/{id_or_name}", params=self._params())
        return Project.model_validate(data)

    async def rollback(self, project_id: str, deployment_id: str, description: str = "") -> None:
        """Instant rollback: point production at an earlier production deployment (no rebuild).

        Args:
            project_id: the project's id.
            deployment_id: the deployment to roll back *to*.
            description: the reason, shown in Vercel's dashboard (at most 256 characters).
        """
        params = self._params(description=description[:256] or None)
        await self._request(
            "POST", f"/v1/projects/{project_id}/rollback/{deployment_id}", params=params
        )

    async def promote(self, project_id: str, deployment_id: str) -> None:
        """Promote a deployment to production (also ends a rolled-back state)."""
        await self._request(
            "POST", f"/v10/projects/{project_id}/promote/{deployment_id}", params=self._params()
        )

    async def last_good_deployment(self, project_id: str, before: datetime) -> Deployment | None:
        """The newest rollback candidate created before ``before`` (e.g. the incident's start).

        Args:
            project_id: the project's id.
            before: only deployments created strictly before this (timezone-aware) time.

        Returns:
            The deployment to roll back to, or None when there is none.
        """
        if before.tzinfo is None:
            before = before.replace(tzinfo=UTC)
        candidates = await self.list_deployments(
            project_id, target="production", state="READY", limit=100, until=before
        )
        current: str | None = None
        if any(dep.is_rollback_candidate is None for dep in candidates):
            # an older API answer without isRollbackCandidate: never "roll back" to what is live
            current = (await self.get_project(project_id)).production_deployment_id
        for dep in candidates:
            if dep.created >= before or dep.is_rollback_candidate is False or dep.uid == current:
                continue
            return dep
        return None
