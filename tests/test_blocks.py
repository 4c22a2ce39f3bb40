"""Every block passes Prefect's standard block checks, keeps credentials secret, and registers."""

from __future__ import annotations

import inspect
import re

import pytest
from prefect.blocks.core import Block
from prefect.testing.standard_test_suites import BlockStandardTestSuite

import blocks

ALL_BLOCKS: list[type[Block]] = sorted(
    {
        obj
        for _, obj in inspect.getmembers(blocks, inspect.isclass)
        if issubclass(obj, Block) and obj.__module__.startswith("blocks.")
    },
    key=lambda cls: cls.__name__,
)

EXPECTED = {
    "VercelProject",
    "SupabaseProject",
    "PostgresTarget",
    "Slack",
    "Teams",
    "PagerDuty",
    "Statuspage",
    "GitHubRepository",
    "JiraProject",
    "AppEndpoint",
    "GatewaySecrets",
}


def test_every_system_has_a_block() -> None:
    """The blocks package exports one block per external system the runbook touches."""
    assert {b.__name__ for b in ALL_BLOCKS} == EXPECTED


@pytest.mark.parametrize("block_cls", ALL_BLOCKS, ids=lambda b: b.__name__)
class TestStandardChecks(BlockStandardTestSuite):
    @pytest.fixture
    def block(self, block_cls):  # type: ignore[no-untyped-def]
        return block_cls

    def test_has_a_valid_image(self, block) -> None:  # type: ignore[no-untyped-def]
        """Overridden: the machines have no internet, so check the logo URL's form, not its pixels."""
        assert block._logo_url is not None
        assert str(block._logo_url).startswith("https://")


@pytest.mark.parametrize("block_cls", ALL_BLOCKS, ids=lambda b: b.__name__)
def test_credentials_are_secret(block_cls) -> None:
    """Every field whose name says token, key, secret, password, dsn or webhook is a SecretStr."""
    pattern = re.compile(r"token|key|secret|password|dsn|webhook")
    for name, field in block_cls.model_fields.items():
        if pattern.search(name) and not name.endswith(("_map", "_kind", "project_key")):
            assert "SecretStr" in str(field.annotation), (
                f"{block_cls.__name__}.{name} is not secret"
            )


@pytest.mark.parametrize("block_cls", ALL_BLOCKS, ids=lambda b: b.__name__)
def test_slugs_are_kebab_case(block_cls) -> None:
    """Block type slugs are stable kebab-case names."""
    assert re.fullmatch(r"[a-z][a-z0-9-]+", block_cls.get_block_type_slug())


def test_prefect_block_register_registers_every_block(prefect_api: str) -> None:
    """`prefect block register -m blocks` against a server makes every block type known to it."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from prefect.client.orchestration import get_client

    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PREFECT_API_URL=prefect_api)
    prefect_cli = Path(sys.executable).parent / "prefect"
    proc = subprocess.run(
        [str(prefect_cli), "block", "register", "-m", "blocks"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr

    async def slugs() -> set[str]:
        async with get_client() as client:
            return {bt.slug for bt in await client.read_block_types()}

    import asyncio

    known = asyncio.run(slugs())
    missing = {b.get_block_type_slug() for b in ALL_BLOCKS} - known
    assert not missing, f"not registered: {missing}"
