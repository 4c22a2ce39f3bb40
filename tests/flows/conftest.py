"""Flow tests: one Prefect test server, the sandbox world on a real port, blocks pointing at it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
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
from flows.runtime import Options
from runbook.ports import free_port
from runbook.sandbox import statuspage as sandbox_statuspage
from runbook.sandbox.app import create_app, reset_world
from runbook.sandbox.core import DEFAULT_TOKEN, World
from runbook.sandbox.server import RunningServer, serve_in_thread
from runbook.sandbox.supabase import PROJECT_REF

TEST_POLICY = """
[monitoring]
recurrence_watch = "1m"
"""
SPEED = 100.0


@pytest.fixture(scope="session")
def sandbox_world() -> World:
    return World(token=DEFAULT_TOKEN, seed=99)


@pytest.fixture(scope="session")
def sandbox_server(sandbox_world: World) -> Iterator[RunningServer]:
    server = serve_in_thread(create_app(sandbox_world))
    yield server
    server.stop()


def save_blocks(base: str, pg_dsn: str | None) -> None:
    """Save one block per system under the names flows.runtime.Systems uses by default."""
    token = SecretStr(DEFAULT_TOKEN)
    components = {"web": sandbox_statuspage.COMPONENTS["Web app"]}

    async def go() -> None:
        await VercelProject(token=token, project_id="prj_sandbox", base_url=f"{base}/vercel").save(
            "production", overwrite=True
        )
        await SupabaseProject(
            project_ref=PROJECT_REF,
            management_token=token,
            anon_key=token,
            api_base_url=f"{base}/supabase",
            data_url=f"{base}/supabase-data",
        ).save("production", overwrite=True)
        await AppEndpoint(
            health_url=f"{base}/app/api/health", metrics_url=f"{base}/app/metrics"
        ).save("production", overwrite=True)
        await Slack(bot_token=token, channel="#incidents", base_url=f"{base}/slack").save(
            "incidents", overwrite=True
        )
        await PagerDuty(routing_key=token, base_url=f"{base}/pagerduty").save(
            "oncall", overwrite=True
        )
        await Statuspage(
            api_key=token,
            page_id="sbxpage",
            component_map=components,
            base_url=f"{base}/statuspage",
        ).save("public", overwrite=True)
        await GitHubRepository(token=token, repo="acme/web", base_url=f"{base}/github").save(
            "incidents", overwrite=True
        )
        if pg_dsn:
            await PostgresTarget(dsn=SecretStr(pg_dsn)).save("production", overwrite=True)

    asyncio.run(go())


class MailSink:
    """An SMTP server on loopback that keeps every message it receives (the customers' inbox)."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd's hook name
        self.messages.append(
            {"to": list(envelope.rcpt_tos), "data": envelope.content.decode("utf-8", "replace")}
        )
        return "250 OK"


@contextlib.contextmanager
def smtp_server(handler: Any) -> Iterator[int]:
    """A local SMTP server (aiosmtpd) answering with ``handler``, on a free port; yields the port."""
    from aiosmtpd.controller import Controller

    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield port
    finally:
        controller.stop()


@pytest.fixture(scope="session")
def mail_sink() -> Iterator[tuple[MailSink, int]]:
    sink = MailSink()
    with smtp_server(sink) as port:
        yield sink, port


@pytest.fixture(scope="session")
def flow_env(
    prefect_api: str,
    sandbox_server: RunningServer,
    pg_admin_dsn: str,
    mail_sink: tuple[MailSink, int],
) -> RunningServer:
    """The Prefect test server with every block saved, pointing at the sandbox world and mail sink."""
    save_blocks(sandbox_server.url, pg_admin_dsn)
    from prefect_email import EmailServerCredentials

    EmailServerCredentials(
        smtp_server="127.0.0.1", smtp_port=mail_sink[1], smtp_type="INSECURE"
    ).save("customers", overwrite=True)
    return sandbox_server


@pytest.fixture
def world(flow_env: RunningServer, sandbox_world: World) -> Iterator[World]:
    """The served sandbox world, reset before each test."""
    reset_world(sandbox_world)
    yield sandbox_world
    reset_world(sandbox_world)


@pytest.fixture
def options(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Options:
    """Run options: a fresh SQLite ledger, the test policy, time compressed 100x."""
    policy = tmp_path / "policy.toml"
    policy.write_text(TEST_POLICY)
    monkeypatch.setenv("RUNBOOK_HOME", str(tmp_path / "home"))
    return Options(
        speed=SPEED, policy_path=str(policy), ledger_url=f"sqlite:///{tmp_path / 'ledger.db'}"
    )


def sandbox_requests(server: RunningServer, vendor: str, path: str | None = None) -> list[dict]:
    params = {"vendor": vendor} | ({"path": path} if path else {})
    return httpx.get(f"{server.url}/_sandbox/requests", params=params, timeout=5).json()
