"""The drill's simulated production: the sandbox world on a real port, and blocks pointing at it.

The blocks are saved under a name of the drill's own (``drill-<random>``), never under the names a
real deployment uses ("production", "incidents" ...), so a drill against a shared Prefect server cannot
overwrite real configuration, and two drills at once cannot overwrite each other's; they are deleted
when the drill ends.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import SecretStr

from blocks import (
    AppEndpoint,
    GitHubRepository,
    PagerDuty,
    PostgresTarget,
    Slack,
    Statuspage,
    SupabaseProject,
    VercelProject,
)
from flows.runtime import Systems
from runbook.sandbox import statuspage as sandbox_statuspage
from runbook.sandbox.app import create_app
from runbook.sandbox.core import World
from runbook.sandbox.server import RunningServer, serve_in_thread
from runbook.sandbox.supabase import PROJECT_REF


def drill_block_name() -> str:
    """A block name no real deployment and no other drill uses."""
    return f"drill-{secrets.token_hex(4)}"


def drill_systems(name: str, *, postgres: bool = True) -> Systems:
    """Block names for every system the sandbox simulates (no Teams, Jira or customer email)."""
    return Systems(
        vercel=name,
        supabase=name,
        app=name,
        postgres=name if postgres else "",
        slack=name,
        teams="",
        pagerduty=name,
        statuspage=name,
        github=name,
        jira="",
        email="",
    )


# the credential of each block field, by the sandbox vendor that checks it
CREDENTIALS = (
    "vercel",
    "supabase",
    "supabase-data",
    "supabase-service",
    "slack",
    "pagerduty",
    "statuspage",
    "github",
    "app",
)


def new_credentials() -> dict[str, str]:
    """A distinct random credential per sandbox system (so a leak shows which one leaked)."""
    return {name: f"sbx-{name}-{secrets.token_urlsafe(12)}" for name in CREDENTIALS}


async def save_sandbox_blocks(
    base: str, creds: Mapping[str, str], pg_dsn: str | None, names: Systems
) -> None:
    """Save one block per sandbox system, each pointing at ``base`` (the sandbox's URL).

    Args:
        base: the sandbox world's URL, no trailing slash.
        creds: the credential per system (``CREDENTIALS``).
        pg_dsn: the PostgreSQL the database checks run against (None: no PostgresTarget block).
        names: the block names to save under.
    """

    def secret(name: str) -> SecretStr:
        return SecretStr(creds[name])

    components = {"web": sandbox_statuspage.COMPONENTS["Web app"]}
    saves = [
        VercelProject(
            token=secret("vercel"), project_id="prj_sandbox", base_url=f"{base}/vercel"
        ).save(names.vercel, overwrite=True),
        SupabaseProject(
            project_ref=PROJECT_REF,
            management_token=secret("supabase"),
            anon_key=secret("supabase-data"),
            service_role_key=secret("supabase-service"),
            api_base_url=f"{base}/supabase",
            data_url=f"{base}/supabase-data",
        ).save(names.supabase, overwrite=True),
        AppEndpoint(
            health_url=f"{base}/app/api/health",
            metrics_url=f"{base}/app/metrics",
            bearer_token=secret("app"),
        ).save(names.app, overwrite=True),
        Slack(bot_token=secret("slack"), channel="#incidents", base_url=f"{base}/slack").save(
            names.slack, overwrite=True
        ),
        PagerDuty(routing_key=secret("pagerduty"), base_url=f"{base}/pagerduty").save(
            names.pagerduty, overwrite=True
        ),
        Statuspage(
            api_key=secret("statuspage"),
            page_id="sbxpage",
            component_map=components,
            base_url=f"{base}/statuspage",
        ).save(names.statuspage, overwrite=True),
        GitHubRepository(token=secret("github"), repo="acme/web", base_url=f"{base}/github").save(
            names.github, overwrite=True
        ),
    ]
    if pg_dsn and names.postgres:
        saves.append(PostgresTarget(dsn=SecretStr(pg_dsn)).save(names.postgres, overwrite=True))
    # one after another: on a fresh Prefect server concurrent saves race to register the block
    # types and one can fail with ObjectNotFound
    for save in saves:
        await save


async def delete_blocks(names: Systems) -> None:
    """Delete the blocks a drill saved (best effort: a block already gone is fine)."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    from flows.runtime import BLOCK_TYPES

    async with get_client() as client:
        for system, name in names.model_dump().items():
            if not name:
                continue
            slug = BLOCK_TYPES[system].get_block_type_slug()
            with contextlib.suppress(ObjectNotFound):
                doc = await client.read_block_document_by_name(name, slug)
                await client.delete_block_document(doc.id)


@dataclass
class SimulatedProduction:
    """The sandbox world served on a free loopback port, with its own random credential."""

    world: World
    server: RunningServer
    credentials: dict[str, str] = field(repr=False)

    @classmethod
    def start(
        cls,
        seed: int = 7,
        database_url: str | None = None,
        credentials: Mapping[str, str] | None = None,
    ) -> SimulatedProduction:
        """Serve a fresh world; each vendor accepts only its own credential."""
        creds = dict(credentials or new_credentials())
        world = World(
            token=secrets.token_urlsafe(16),
            tokens={
                k: v
                for k, v in creds.items()
                if k
                in (
                    "vercel",
                    "supabase",
                    "supabase-data",
                    "slack",
                    "pagerduty",
                    "statuspage",
                    "github",
                )
            },
            seed=seed,
            database_url=database_url,
        )
        server = serve_in_thread(create_app(world))
        return cls(world=world, server=server, credentials=creds)

    @property
    def url(self) -> str:
        return self.server.url

    def stop(self) -> None:
        from runbook.sandbox.scenarios import end_slow_query

        # a real backend held by db-degradation must not outlive us; the database may be gone
        with contextlib.suppress(Exception):
            end_slow_query(self.world)
        self.server.stop()

    def notifications(self) -> dict[str, int]:
        """What people were sent, by channel, from the vendors' own request logs (2xx only)."""
        rules: dict[str, tuple[str, str, tuple[str, ...]]] = {
            "slack": ("slack", r"chat\.postMessage|chat\.update", ("POST",)),
            "pagerduty": ("pagerduty", r"enqueue", ("POST",)),
            "statuspage": ("statuspage", r"/incidents", ("POST", "PATCH", "PUT")),
            "ticket": ("github", r"/issues", ("POST", "PATCH")),
        }
        counts: dict[str, int] = {}
        for channel, (vendor, path, methods) in rules.items():
            counts[channel] = sum(
                1
                for r in self.world.requests_for(vendor, path)
                if r.method in methods and 200 <= r.status < 300
            )
        return counts

    def requests(self) -> list[dict[str, Any]]:
        return [r.__dict__ for r in self.world.requests]
