"""Flow tests: one Prefect test server, the sandbox world on a real port, blocks pointing at it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from flows.runtime import Options, Systems
from runbook.drill.world import CREDENTIALS, save_sandbox_blocks
from runbook.ports import free_port
from runbook.sandbox.app import create_app, reset_world
from runbook.sandbox.core import DEFAULT_TOKEN, World
from runbook.sandbox.server import RunningServer, serve_in_thread

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
    """Save one block per system under the names flows.runtime.Systems uses by default, every
    credential the sandbox world's one token (the drill's own saver, ``save_sandbox_blocks``)."""
    asyncio.run(
        save_sandbox_blocks(base, dict.fromkeys(CREDENTIALS, DEFAULT_TOKEN), pg_dsn, Systems())
    )


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
