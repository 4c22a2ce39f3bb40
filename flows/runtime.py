"""What every phase flow works with: the ledger, the policy, the run's speed, and the configured systems.

Flow parameters name blocks (never credentials); ``load_systems`` loads the ones that exist. A system
whose block is missing is None, and the phase that needs it records a timeline note saying which block to
create instead of crashing.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from prefect.blocks.core import Block
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import BlockDocument
from prefect.exceptions import MissingContextError
from prefect.logging import get_run_logger
from prefect_email import EmailServerCredentials
from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy.engine import make_url

from blocks import (
    AppEndpoint,
    GitHubRepository,
    JiraProject,
    PagerDuty,
    PostgresTarget,
    Slack,
    Statuspage,
    SupabaseProject,
    Teams,
    VercelProject,
)
from runbook.clock import utcnow
from runbook.ledger import Ledger, open_ledger
from runbook.models import Incident, Phase
from runbook.policy import Policy, load_policy


class Systems(BaseModel):
    """Names of the blocks that configure each system (create them in the Prefect UI or with code).

    Leave a name empty to leave that system out on purpose.
    """

    vercel: str = Field(
        "production", description="VercelProject block name (deploys and rollbacks)."
    )
    supabase: str = Field(
        "production", description="SupabaseProject block name (functions, auth, logs)."
    )
    app: str = Field("production", description="AppEndpoint block name (health check and metrics).")
    postgres: str = Field("production", description="PostgresTarget block name (database checks).")
    slack: str = Field("incidents", description="Slack block name (incident channel, war rooms).")
    teams: str = Field("", description="Teams block name (optional second chat channel).")
    pagerduty: str = Field("oncall", description="PagerDuty block name (paging for P0/P1).")
    statuspage: str = Field("public", description="Statuspage block name (customer-facing status).")
    github: str = Field(
        "incidents", description="GitHubRepository block name (tickets and recent commits)."
    )
    jira: str = Field("", description="JiraProject block name (tickets, instead of GitHub).")
    email: str = Field(
        "customers",
        description="EmailServerCredentials block name (prefect-email) for customer email.",
    )


BLOCK_TYPES: dict[str, type[Block]] = {
    "vercel": VercelProject,
    "supabase": SupabaseProject,
    "app": AppEndpoint,
    "postgres": PostgresTarget,
    "slack": Slack,
    "teams": Teams,
    "pagerduty": PagerDuty,
    "statuspage": Statuspage,
    "github": GitHubRepository,
    "jira": JiraProject,
    "email": EmailServerCredentials,
}


@dataclass
class Loaded:
    """The systems whose blocks exist; ``missing`` says what to create for the others."""

    blocks: dict[str, Block] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)

    def get(self, name: str) -> Any:
        return self.blocks.get(name)

    def hint(self, name: str) -> str:
        """A sentence saying how to configure ``name``."""
        return self.missing.get(name) or f"{name} is not configured"

    @property
    def tickets(self) -> GitHubRepository | JiraProject | None:
        return self.blocks.get("jira") or self.blocks.get("github")  # type: ignore[return-value]


BLOCK_CACHE_S = 30.0
_block_cache: dict[str, tuple[float, Loaded]] = {}
# system -> (the document a block was built from, the block): a document read again unchanged
# gives back the same block, without building it again
_built_blocks: dict[str, tuple[BlockDocument, Any]] = {}


async def read_block_documents(wanted: dict[str, str]) -> dict[str, BlockDocument]:
    """The block documents named in ``wanted`` (system -> block name), with their secrets, in one
    API call; a system whose document does not exist is absent from the result.

    One ``/block_documents/filter`` request instead of one read per block: measured on the 2-core
    machine against a local server, 7 blocks took 100-140 ms this way and 470-650 ms as 7 concurrent
    ``Block.aload`` calls (the server handles requests one after the other, each with its own fixed
    cost), and every run that `runbook serve` starts reads them again.
    """
    slugs = {key: BLOCK_TYPES[key].get_block_type_slug() for key in wanted}
    names, types = sorted(set(wanted.values())), sorted(set(slugs.values()))
    async with get_client() as client:
        response = await client.request(
            "POST",
            "/block_documents/filter",
            json={
                "block_documents": {"name": {"any_": names}},
                "block_types": {"slug": {"any_": types}},
                "include_secrets": True,
                # every (type, name) pair may exist, wanted or not (a Slack block named
                # "production" when only the Vercel one is wanted): room for all of them
                "limit": len(names) * len(types),
            },
        )
    found = {
        (doc.block_type.slug if doc.block_type else None, doc.name): doc
        for doc in BlockDocument.model_validate_list(response.json())
    }
    return {
        key: found[(slugs[key], name)]
        for key, name in wanted.items()
        if (slugs[key], name) in found
    }


async def load_systems(names: Systems) -> Loaded:
    """Load every named block (in one API call); missing ones are noted, not fatal.

    The result is kept BLOCK_CACHE_S seconds per process, so the phases of one incident read the
    blocks once instead of once each; a block edited in the UI is seen within that time.
    """
    key = names.model_dump_json()
    cached = _block_cache.get(key)
    if cached is not None and time.monotonic() - cached[0] < BLOCK_CACHE_S:
        return cached[1]
    loaded = Loaded()
    wanted: dict[str, str] = {}
    for system, block_name in names.model_dump().items():
        if block_name:
            wanted[system] = block_name
        else:
            loaded.missing[system] = f"{system} is switched off (empty block name)"
    documents = await read_block_documents(wanted) if wanted else {}
    for system, block_name in wanted.items():
        cls = BLOCK_TYPES[system]
        if system in documents:
            loaded.blocks[system] = _block_from(system, cls, documents[system])
        else:
            loaded.missing[system] = (
                f"no {cls.__name__} block named {block_name!r}: create one "
                f"(type {cls.get_block_type_slug()}) or set systems.{system}"
            )
    _block_cache[key] = (time.monotonic(), loaded)
    return loaded


def _block_from(system: str, cls: Any, document: BlockDocument) -> Any:
    """The block ``document`` describes, as Block.aload builds it (schema checks included).

    A document that is the same as the one this process last built the system's block from (same
    id, schema, data and nested documents) gives back that block: a phase that starts more than
    BLOCK_CACHE_S after the last read reads the documents again but builds nothing, and Prefect's
    ``prefect.block.<type>.loaded`` event (one per block built, 7 per read: ~25 of the ~210 events
    of an incident at production timing) is emitted once per run process, not once per read."""
    seen = _built_blocks.get(system)
    if seen is not None and _same_document(seen[0], document) and isinstance(seen[1], cls):
        return seen[1]
    block = cls._load_from_block_document(document)
    _built_blocks[system] = (document, block)
    return block


def _same_document(a: BlockDocument, b: BlockDocument) -> bool:
    return (
        a.id == b.id
        and a.block_schema_id == b.block_schema_id
        and a.data == b.data
        and a.block_document_references == b.block_document_references
    )


@functools.cache
def _ledger(url: str | None) -> Ledger:
    return open_ledger(url)


def get_ledger(url: str | None = None) -> Ledger:
    """One ledger per process and URL (its engine pools connections)."""
    return _ledger(url)


def compress(delta: timedelta, speed: float) -> timedelta:
    """A policy duration in real time when the drill runs ``speed`` times faster."""
    return delta / speed


@dataclass
class Runtime:
    """Everything a phase needs, built once per flow run."""

    ledger: Ledger
    policy: Policy
    systems: Loaded
    speed: float = 1.0
    dry_run: bool = False
    ledger_url: str | None = None

    async def note(
        self,
        incident_id: int,
        kind: str,
        message: str,
        *,
        phase: Phase | None = None,
        data: dict[str, Any] | None = None,
        actor: str = "runbook",
    ) -> None:
        """Add a timeline event and log it (readable without the ledger)."""
        await asyncio.to_thread(
            self.ledger.add_event, incident_id, kind, message, phase=phase, actor=actor, data=data
        )
        with contextlib.suppress(MissingContextError):  # outside a run there is no run logger
            get_run_logger().info("INC-%s %s: %s", incident_id, kind, message)

    async def incident(self, incident_id: int) -> Incident:
        return await asyncio.to_thread(self.ledger.get_incident, incident_id)

    def now(self) -> datetime:
        return utcnow()

    def deadline(self, phase: Phase, incident: Incident) -> datetime | None:
        """The phase's deadline in real time: the policy's, compressed by the run's speed."""
        due = self.policy.deadline(phase, incident.severity, incident.detected_at)
        return (
            None
            if due is None
            else incident.detected_at + compress(due - incident.detected_at, self.speed)
        )

    def postgres(self) -> PostgresTarget | None:
        """The PostgresTarget block, its long-query threshold compressed by the run's speed."""
        target: PostgresTarget | None = self.systems.get("postgres")
        if target is None or self.speed == 1:
            return target
        threshold = max(0.5, target.long_query_threshold_s / self.speed)
        return target.model_copy(update={"long_query_threshold_s": threshold})

    def deadlines(self, incident: Incident) -> dict[str, datetime]:
        out = {}
        for phase in Phase:
            due = self.deadline(phase, incident)
            if due is not None:
                out[phase.value] = due
        return out


class Options(BaseModel):
    """Run options shared by every phase flow."""

    model_config = ConfigDict(hide_input_in_errors=True)  # a rejected URL may hold a password

    dry_run: bool = Field(False, description="Plan every action and record it, but change nothing.")
    speed: float = Field(
        1.0,
        gt=0,
        le=10000,
        description="Run the SLA clocks and waits this many times faster (drills).",
    )
    policy_path: str | None = Field(
        None, description="A policy file over the defaults (else RUNBOOK_POLICY)."
    )
    ledger_url: str | None = Field(
        None, description="Ledger URL (else RUNBOOK_LEDGER_URL or SQLite)."
    )
    systems: Systems = Field(
        default_factory=Systems, description="Which blocks configure each system."
    )

    @field_validator("ledger_url")
    @classmethod
    def _no_password(cls, value: str | None) -> str | None:
        # run parameters are stored and shown by Prefect: a password here would leak
        if value and make_url(value).password:
            raise ValueError(
                "ledger_url must not carry a password (run parameters are stored in Prefect); "
                "set RUNBOOK_LEDGER_URL on the worker, or use a .pgpass file"
            )
        return value


async def build_runtime(options: Options) -> Runtime:
    """Open the ledger, read the policy, load the blocks."""
    ledger = await asyncio.to_thread(get_ledger, options.ledger_url)
    policy = load_policy(options.policy_path)
    systems = await load_systems(options.systems)
    return Runtime(ledger, policy, systems, options.speed, options.dry_run, options.ledger_url)
