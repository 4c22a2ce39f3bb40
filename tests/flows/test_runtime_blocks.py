"""flows.runtime.load_systems: every named block read in one API call, each as Block.aload reads it."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from pydantic import SecretStr

from blocks import PagerDuty, Slack, Statuspage
from flows import runtime
from flows.runtime import Loaded, Systems, load_systems


def _load(names: Systems) -> Loaded:
    runtime._block_cache.clear()  # each test reads the server, not an earlier test's cache
    return asyncio.run(load_systems(names))


def _off(**named: str) -> Systems:
    """Systems with every block switched off except those named."""
    return Systems(**dict.fromkeys(Systems.model_fields, "")).model_copy(update=named)


def test_each_block_comes_back_as_aload_returns_it_secrets_included(prefect_api: str) -> None:
    """Blocks of three types, two of them sharing a name, come back as the type each system wants,
    equal to what Block.aload reads, with their secret values."""
    name = f"rt-{uuid.uuid4().hex[:8]}"
    other = f"rt-{uuid.uuid4().hex[:8]}"
    Slack(bot_token=SecretStr("xoxb-slack-secret"), channel="#inc").save(name)
    PagerDuty(routing_key=SecretStr("pd-secret" + "0" * 23)).save(name)
    Statuspage(api_key=SecretStr("sp-secret"), page_id="pg1").save(other)

    loaded = _load(_off(slack=name, pagerduty=name, statuspage=other))

    assert set(loaded.blocks) == {"slack", "pagerduty", "statuspage"}
    assert isinstance(loaded.blocks["slack"], Slack)
    assert isinstance(loaded.blocks["pagerduty"], PagerDuty)
    assert loaded.blocks["slack"] == asyncio.run(Slack.aload(name))
    assert loaded.blocks["pagerduty"] == asyncio.run(PagerDuty.aload(name))
    assert loaded.blocks["statuspage"] == asyncio.run(Statuspage.aload(other))
    assert loaded.get("slack").bot_token.get_secret_value() == "xoxb-slack-secret"
    assert loaded.get("pagerduty").routing_key.get_secret_value() == "pd-secret" + "0" * 23
    assert set(loaded.missing) == set(Systems.model_fields) - {"slack", "pagerduty", "statuspage"}


def test_a_missing_block_says_what_to_create_and_an_empty_name_is_switched_off(
    prefect_api: str,
) -> None:
    """A name with no block of the system's type (even when another type has that name) is noted
    with the type to create; an empty name is switched off; neither is fatal."""
    name = f"rt-{uuid.uuid4().hex[:8]}"
    Slack(bot_token=SecretStr("xoxb-token"), channel="#inc").save(name)

    loaded = _load(_off(slack=name, statuspage=name))

    assert set(loaded.blocks) == {"slack"}
    assert loaded.hint("statuspage") == (
        f"no Statuspage block named {name!r}: create one (type statuspage-page) or set "
        "systems.statuspage"
    )
    assert loaded.hint("pagerduty") == "pagerduty is switched off (empty block name)"


def test_every_system_switched_off_reads_nothing(
    prefect_api: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no block named, no API call is made and every system is noted as switched off."""

    async def refuse(wanted: dict[str, str]) -> dict[str, object]:
        raise AssertionError(f"read blocks {wanted} although none was named")

    monkeypatch.setattr(runtime, "read_block_documents", refuse)
    loaded = _load(_off())
    assert loaded.blocks == {}
    assert set(loaded.missing) == set(Systems.model_fields)


def test_blocks_of_other_types_under_the_wanted_names_do_not_crowd_out_the_wanted_ones(
    prefect_api: str,
) -> None:
    """Three names, each saved for all three types (nine documents match the filter): each system
    gets its own type's block under its own name."""
    names = [f"rt-{uuid.uuid4().hex[:8]}" for _ in range(3)]
    for n, name in enumerate(names):
        Slack(bot_token=SecretStr(f"xoxb-{n}"), channel=f"#c{n}").save(name)
        PagerDuty(routing_key=SecretStr(f"{n}" * 32)).save(name)
        Statuspage(api_key=SecretStr(f"sp-{n}"), page_id=f"page{n}").save(name)

    loaded = _load(_off(slack=names[0], pagerduty=names[1], statuspage=names[2]))

    assert loaded.get("slack").channel == "#c0"
    assert loaded.get("pagerduty").routing_key.get_secret_value() == "1" * 32
    assert loaded.get("statuspage").page_id == "page2"


def test_a_document_read_again_unchanged_gives_back_the_block_and_an_edit_is_seen(
    prefect_api: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once the cache has expired the documents are read again; an unchanged one gives back the
    block built before (built once, so Prefect's `loaded` event is emitted once), an edited one
    (saved over in the UI) gives a new block with the new values."""
    name = f"rt-{uuid.uuid4().hex[:8]}"
    Slack(bot_token=SecretStr("xoxb-first"), channel="#inc").save(name)
    built: list[str] = []
    original = Slack._load_from_block_document.__func__  # type: ignore[attr-defined]

    def counting(cls: type[Slack], document: object) -> Slack:
        built.append(document.name)  # type: ignore[attr-defined]
        return original(cls, document)

    monkeypatch.setattr(Slack, "_load_from_block_document", classmethod(counting))
    reads: list[dict[str, str]] = []
    read = runtime.read_block_documents

    async def counting_read(wanted: dict[str, str]) -> dict[str, object]:
        reads.append(wanted)
        return await read(wanted)

    monkeypatch.setattr(runtime, "read_block_documents", counting_read)

    first = _load(_off(slack=name)).get("slack")
    again = _load(_off(slack=name)).get("slack")  # _load empties the 30 s cache: read again

    assert len(reads) == 2
    assert again is first
    assert built == [name]

    Slack(bot_token=SecretStr("xoxb-second"), channel="#inc-2").save(name, overwrite=True)
    edited = _load(_off(slack=name)).get("slack")

    assert len(reads) == 3
    assert built == [name, name]
    assert edited.channel == "#inc-2"
    assert edited.bot_token.get_secret_value() == "xoxb-second"
