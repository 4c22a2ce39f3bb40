"""The Supabase project block: where the runbook finds the project and its credentials."""

from __future__ import annotations

import re
from urllib.parse import urlparse

import httpx
from prefect.blocks.core import Block
from pydantic import ConfigDict, Field, SecretStr, field_validator, model_validator

from runbook.clients.supabase import SUPABASE_API_URL, SupabaseClient, SupabaseDataClient

_REAL_API_HOST = "api.supabase.com"


class SupabaseProject(Block):
    """A Supabase project: its ref, Management API token, API keys and URLs.

    The management token must be a personal access token (``sbp_...``) when ``api_base_url`` is the
    real Supabase API (``api.supabase.com``); any other base URL (the sandbox at
    ``http://127.0.0.1:8900/supabase`` for drills) accepts any non-empty token, e.g. "sandbox-token".

    Example:
        Load a saved project and list its edge functions:
        ```python
        from blocks.supabase import SupabaseProject

        supabase_project = SupabaseProject.load("BLOCK_NAME")
        async with supabase_project.get_client() as client:
            functions = await client.list_functions(supabase_project.project_ref)
        ```
    """

    # a failed validation must not echo the inputs: they hold the token and keys
    model_config = ConfigDict(hide_input_in_errors=True)

    _block_type_name = "Supabase Project"
    _block_type_slug = "supabase-project"
    _logo_url = "https://avatars.githubusercontent.com/u/54469796?s=200&v=4"  # type: ignore[assignment]
    _description = (
        "A Supabase project (edge functions, auth, health, logs) the incident runbook inspects and "
        "mitigates through the Management API and the project's own URL."
    )
    _documentation_url = "https://supabase.com/docs/reference/api/introduction"  # type: ignore[assignment]

    project_ref: str = Field(
        description="The project's reference ID: 20 lowercase letters and digits (from its URL)."
    )
    management_token: SecretStr = Field(
        description=(
            "A Supabase personal access token (sbp_...) for the Management API; any non-empty "
            "token is accepted when api_base_url is not api.supabase.com (the sandbox)."
        )
    )
    anon_key: SecretStr = Field(
        description="The project's anon (public) API key, used to probe auth, REST and functions."
    )
    service_role_key: SecretStr | None = Field(
        default=None,
        description="The project's service role key, for calls that must bypass row level security.",
    )
    api_base_url: str = Field(
        default=SUPABASE_API_URL,
        description="The Management API root; point it at the sandbox for drills.",
    )
    data_url: str | None = Field(
        default=None,
        description="The project's own URL; defaults to https://<project_ref>.supabase.co.",
    )
    timeout: float = Field(
        default=10.0, gt=0, description="Seconds every Supabase call may take before it times out."
    )

    @field_validator("project_ref")
    @classmethod
    def _check_ref(cls, value: str) -> str:
        if not re.fullmatch(r"[a-z0-9]{20}", value):
            raise ValueError(
                f"project_ref must be 20 lowercase letters and digits (the xxxx in "
                f"https://xxxx.supabase.co), got {value!r}"
            )
        return value

    @field_validator("api_base_url", "data_url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        if value is not None and urlparse(value).scheme not in ("http", "https"):
            raise ValueError(f"must be an http(s) URL, got {value!r}")
        return value.rstrip("/") if value else value

    @model_validator(mode="after")
    def _check_token(self) -> SupabaseProject:
        token = self.management_token.get_secret_value()
        if not token:
            raise ValueError(
                "management_token is empty: create one at supabase.com/dashboard/account/tokens"
            )
        if urlparse(self.api_base_url).hostname == _REAL_API_HOST and not token.startswith("sbp_"):
            raise ValueError(
                "management_token must be a Supabase personal access token starting with sbp_ "
                "(create one at supabase.com/dashboard/account/tokens)"
            )
        if not self.anon_key.get_secret_value():
            raise ValueError("anon_key is empty: copy it from the project's API settings")
        return self

    @property
    def project_url(self) -> str:
        """The project's own URL (``data_url`` or ``https://<ref>.supabase.co``)."""
        return self.data_url or f"https://{self.project_ref}.supabase.co"

    def get_client(self, *, transport: httpx.AsyncBaseTransport | None = None) -> SupabaseClient:
        """A Management API client for this project.

        Args:
            transport: an httpx transport for tests (the in-process sandbox).

        Returns:
            A ``SupabaseClient``; use it with ``async with``.
        """
        return SupabaseClient(
            self.api_base_url,
            self.management_token.get_secret_value(),
            timeout=self.timeout,
            transport=transport,
        )

    def get_data_client(
        self, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> SupabaseDataClient:
        """A data-plane client (auth health, REST root, direct function calls) for this project.

        Args:
            transport: an httpx transport for tests (the in-process sandbox).

        Returns:
            A ``SupabaseDataClient`` authenticated with the anon key.
        """
        return SupabaseDataClient(
            self.project_url,
            self.anon_key.get_secret_value(),
            timeout=self.timeout,
            transport=transport,
        )
