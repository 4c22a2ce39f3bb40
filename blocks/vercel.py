"""Prefect block: a Vercel project the runbook may inspect, roll back and promote."""

from __future__ import annotations

import httpx
from prefect.blocks.core import Block
from pydantic import Field, SecretStr, field_validator

from runbook.clients.vercel import DEFAULT_BASE_URL, VercelClient


class VercelProject(Block):
    """A Vercel project and the access token that may act on it.

    The token needs access to the project's deployments (read) and to instant rollback and
    promote (write). For a team project, set ``team_id``: every call then carries ``teamId``.

    Example:
        Load a stored block and list the production deployments:
        ```python
        from blocks.vercel import VercelProject

        vercel_project = VercelProject.load("BLOCK_NAME")
        async with vercel_project.get_client() as client:
            deployments = await client.list_deployments(vercel_project.project_id)
        ```
    """

    _block_type_name = "Vercel Project"
    _block_type_slug = "vercel-project"
    _logo_url = "https://assets.vercel.com/image/upload/front/favicon/vercel/180x180.png"  # type: ignore[assignment]
    _description = "A Vercel project (id, team, access token) for deployment rollback and promote."
    _documentation_url = "https://vercel.com/docs/rest-api"  # type: ignore[assignment]

    token: SecretStr = Field(
        description="A Vercel access token with access to the project (Account Settings > Tokens)."
    )
    project_id: str = Field(
        description="The project's id (prj_...) or name, as shown in the project's settings."
    )
    team_id: str | None = Field(
        default=None,
        description="The id of the team that owns the project (team_...); empty for a personal account.",
    )
    base_url: str = Field(
        default=DEFAULT_BASE_URL,
        description="The API root; the sandbox (http://127.0.0.1:8900/vercel) can stand in for drills.",
    )
    timeout: float = Field(
        default=10.0, gt=0, le=120, description="Seconds to wait for each Vercel API call."
    )

    @field_validator("token")
    @classmethod
    def _token_not_blank(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().strip():
            raise ValueError("token is empty: create one under Vercel Account Settings > Tokens")
        return value

    @field_validator("project_id")
    @classmethod
    def _project_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("project_id is empty: use the project's id (prj_...) or name")
        return value.strip()

    @field_validator("team_id")
    @classmethod
    def _team_id_form(cls, value: str | None) -> str | None:
        value = (value or "").strip() or None
        if value is not None and not value.startswith("team_"):
            raise ValueError(
                f"team_id must start with team_ (got {value!r}); leave it empty for a personal account"
            )
        return value

    @field_validator("base_url")
    @classmethod
    def _base_url_is_http(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"base_url must be an http(s) URL, not {value!r}")
        return value.rstrip("/")

    def get_client(self, *, transport: httpx.AsyncBaseTransport | None = None) -> VercelClient:
        """A client for this project's account.

        Args:
            transport: an httpx transport for tests.

        Returns:
            A VercelClient; use it as an async context manager to close it.
        """
        return VercelClient(
            self.base_url,
            self.token.get_secret_value(),
            team_id=self.team_id,
            timeout=self.timeout,
            transport=transport,
        )
