"""Incident runs that died: the heartbeat automation on a real Prefect server, and the watcher's
relaunch of an open incident whose run crashed (once per attempt, at most three times)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

import flows.recovery as recovery
from flows.recovery import AUTOMATION_NAME, MISSED_BEATS, ensure_zombie_automation, recover_crashed
from runbook.gateway.dispatcher import INCIDENT_DEPLOYMENT, PrefectLauncher
from runbook.ledger import Ledger, open_ledger
from runbook.models import Alert, IncidentStatus
from runbook.ports import free_port
from runbook.recovery import MAX_RELAUNCHES, launch_key, launch_keys


class _Runtime:
    """What ``recover_crashed`` uses of the watch run's runtime: the ledger and its notes."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    async def note(self, incident_id: int, kind: str, message: str, **kw: Any) -> None:
        self.ledger.add_event(incident_id, kind, message, **kw)


async def test_the_automation_is_created_once_and_follows_the_frequency(prefect_api: str) -> None:
    """Created, then present on the next start; a start with another heartbeat frequency updates
    its window (3 periods); it matches only runs tagged runbook and sets them Crashed."""
    from prefect.automations import Automation

    await _delete_automation()  # the session's server is shared: a served test may have made it
    try:
        assert await ensure_zombie_automation(30) == "created"
        assert await ensure_zombie_automation(30) == "present"
        first = await Automation.aread(name=AUTOMATION_NAME)
        assert first.trigger.within == timedelta(seconds=30 * MISSED_BEATS)
        assert await ensure_zombie_automation(60) == "updated"
        again = await Automation.aread(name=AUTOMATION_NAME)
        assert again.id == first.id and again.trigger.within == timedelta(seconds=180)
        related = again.trigger.match_related
        related = related if isinstance(related, list) else [related]
        assert [dict(r.root) for r in related] == [
            {"prefect.resource.role": "tag", "prefect.resource.id": "prefect.tag.runbook"}
        ]
        assert again.trigger.posture.value == "Proactive"
        assert [a.type for a in again.actions] == ["change-flow-run-state"]
        assert again.actions[0].state.value == "CRASHED"
    finally:
        await _delete_automation()


async def _delete_automation() -> None:
    from prefect.automations import Automation

    with contextlib.suppress(ValueError):  # none
        await (await Automation.aread(name=AUTOMATION_NAME)).adelete()


async def _runs(client: Any, keys: list[str]) -> list[Any]:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterIdempotencyKey

    return await client.read_flow_runs(
        flow_run_filter=FlowRunFilter(idempotency_key=FlowRunFilterIdempotencyKey(any_=keys))
    )


async def _crash(client: Any, key: str) -> str:
    from prefect.states import Crashed

    (run,) = await _runs(client, [key])
    await client.set_flow_run_state(run.id, Crashed(message="worker died"), force=True)
    return str(run.id)


@pytest.mark.timeout(120)
async def test_an_open_incident_whose_run_crashed_is_launched_again(
    prefect_api: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The gateway's run crashes: the watcher's step launches relaunch 1 and notes it; run again
    while that run waits, it launches nothing; each later crash gets the next attempt, and after
    the third the incident is left to people with one note, however often the step runs. A
    resolved incident's crashed run is not relaunched."""
    from prefect.client.orchestration import PrefectClient

    ledger = open_ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    opened = ledger.record_alert(Alert(source="generic", delivery_id="d1", dedup_key="crash"))
    done = ledger.record_alert(Alert(source="generic", delivery_id="d2", dedup_key="done"))
    incident_id, resolved_id = opened.incident_id, done.incident_id
    assert incident_id is not None and resolved_id is not None
    launch = PrefectLauncher(api_url=prefect_api)
    rt = _Runtime(ledger)
    async with PrefectClient(prefect_api) as client:
        # the session's server is shared: runs other tests launched for incidents with these ids
        # (their own ledgers count from 1 too) are removed first
        for run in await _runs(client, [*launch_keys(incident_id), *launch_keys(resolved_id)]):
            await client.delete_flow_run(run.id)
        try:
            # the incident wrote to the ledger a moment ago: with the automation's window ahead of
            # it, a crashed run may still be alive, and nothing is launched yet
            monkeypatch.setattr(recovery, "automation_window_s", lambda: 3600.0)
            flow_name, name = INCIDENT_DEPLOYMENT.split("/")
            flow_id = await client.create_flow_from_name(flow_name)
            await client.create_deployment(flow_id=flow_id, name=name)
            await launch(incident_id)
            await launch(resolved_id)
            ledger.transition(resolved_id, IncidentStatus.RESOLVED, reason="test")
            crashed = await _crash(client, launch_key(incident_id))
            await _crash(client, launch_key(resolved_id))
            assert await recover_crashed(rt, launch) == []
            monkeypatch.setattr(recovery, "automation_window_s", lambda: 0.0)

            out = await recover_crashed(rt, launch)
            assert [(o["incident_id"], o["relaunched"], o.get("attempt")) for o in out] == [
                (incident_id, True, 1)
            ]
            (note,) = [e for e in ledger.timeline(incident_id) if e.kind == "relaunched"]
            assert note.data == {"crashed_run": crashed, "attempt": 1}
            assert await recover_crashed(rt, launch) == []  # relaunch 1 is scheduled: it is the run

            for attempt in range(1, MAX_RELAUNCHES + 1):
                await _crash(client, launch_key(incident_id, attempt))
                out = await recover_crashed(rt, launch)
                assert out[0]["relaunched"] is (attempt < MAX_RELAUNCHES)
            await recover_crashed(rt, launch)
            kinds = [e.kind for e in ledger.timeline(incident_id)]
            assert kinds.count("relaunched") == MAX_RELAUNCHES
            assert kinds.count("relaunch_abandoned") == 1
            runs = await _runs(client, [*launch_keys(incident_id), *launch_keys(resolved_id)])
            keys = sorted(r.idempotency_key for r in runs if r.idempotency_key)
            assert keys == sorted(
                [launch_key(incident_id, n) for n in range(MAX_RELAUNCHES + 1)]
                + [launch_key(resolved_id)]
            )
        finally:  # nothing of this test's is left for the tests after it on the shared server
            for run in await _runs(client, [*launch_keys(incident_id), *launch_keys(resolved_id)]):
                await client.delete_flow_run(run.id)


ROOT = Path(__file__).resolve().parents[2]


def _server(home: Path) -> tuple[subprocess.Popen[bytes], str]:
    """A real ``prefect server start`` (its services on: the automation's trigger needs them)."""
    port = free_port()
    env = dict(os.environ, PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false")
    env.pop("PREFECT_API_URL", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    api = f"http://127.0.0.1:{port}/api"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, "prefect server start exited"
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(api + "/health", timeout=2).status_code == 200:
                return proc, api
        time.sleep(0.5)
    proc.kill()
    raise AssertionError("prefect server start did not answer in 120 s")


def _stop(server: subprocess.Popen[bytes]) -> None:
    """Stop a server ``_server`` started: SIGTERM, then SIGKILL after 30 s."""
    server.terminate()
    try:
        server.wait(30)
    except subprocess.TimeoutExpired:
        server.kill()


async def _state(client: Any, key: str) -> str | None:
    runs = await _runs(client, [key])
    return runs[0].state.type.value if runs and runs[0].state else None


@pytest.mark.timeout(480)
async def test_a_killed_run_is_marked_crashed_by_heartbeat_and_launched_again(
    tmp_path: Path,
) -> None:
    """End to end on a real server: the incident's run (a stand-in that waits, sending heartbeats
    every 30 s) is killed with its process; the automation sets it Crashed within a few heartbeat
    periods, and the watcher's step launches the incident again under relaunch key 1."""
    from prefect.client.orchestration import PrefectClient
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_FLOWS_HEARTBEAT_FREQUENCY,
        temporary_settings,
    )

    server, api = _server(tmp_path / "prefect")
    run_proc: subprocess.Popen[bytes] | None = None
    try:
        # the watcher's process has the workers' heartbeat setting: 30 s, a 90 s window
        with temporary_settings(
            updates={PREFECT_API_URL: api, PREFECT_FLOWS_HEARTBEAT_FREQUENCY: 30}
        ):
            assert await ensure_zombie_automation(30) == "created"
            ledger = open_ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
            opened = ledger.record_alert(Alert(source="generic", delivery_id="z", dedup_key="z"))
            incident_id = opened.incident_id
            assert incident_id is not None
            key = launch_key(incident_id)
            async with PrefectClient(api) as client:
                flow_name, name = INCIDENT_DEPLOYMENT.split("/")
                flow_id = await client.create_flow_from_name(flow_name)
                await client.create_deployment(
                    flow_id=flow_id, name=name, entrypoint="tests/flows/zombie_probe.py:probe",
                    path=str(ROOT), tags=["runbook"],
                )  # fmt: skip
                await PrefectLauncher(api_url=api)(incident_id)
                (run,) = await client.read_flow_runs()
                env = dict(
                    os.environ,
                    PREFECT_API_URL=api,
                    PREFECT__FLOW_RUN_ID=str(run.id),
                    PREFECT_FLOWS_HEARTBEAT_FREQUENCY="30",
                )
                run_proc = subprocess.Popen(  # noqa: ASYNC220 - returns at once
                    [sys.executable, "-m", "prefect.engine"], cwd=ROOT, env=env,
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                )  # fmt: skip
                deadline = time.monotonic() + 120
                while await _state(client, key) != "RUNNING":
                    assert run_proc.poll() is None, "the stand-in run exited on its own"
                    assert time.monotonic() < deadline, "the stand-in run never ran"
                    await asyncio.sleep(0.5)
                await asyncio.sleep(5)  # its first heartbeat is out
                run_proc.kill()
                run_proc.wait(10)
                assert await _state(client, key) == "RUNNING"  # Prefect alone does not notice
                deadline = time.monotonic() + 300
                while (state := await _state(client, key)) == "RUNNING":
                    assert time.monotonic() < deadline, "the killed run was never marked Crashed"
                    await asyncio.sleep(2)
                assert state == "CRASHED"

                out = await recover_crashed(_Runtime(ledger), PrefectLauncher(api_url=api))
                assert [(o["incident_id"], o.get("attempt")) for o in out] == [(incident_id, 1)]
                assert await _state(client, launch_key(incident_id, 1)) == "SCHEDULED"
    finally:
        if run_proc is not None and run_proc.poll() is None:
            run_proc.kill()
        _stop(server)


async def test_the_watch_relaunches_up_to_the_policys_limit(monkeypatch, tmp_path: Path) -> None:
    """The watch run's relaunch step passes the policy's recovery.max_relaunches (here 1) on to
    ``recover_crashed``, not the default 3."""
    import flows.watch as watch_module
    from runbook.policy import load_policy

    policy_file = tmp_path / "p.toml"
    policy_file.write_text("[recovery]\nmax_relaunches = 1\n")
    seen: list[int] = []

    async def fake_recover(rt: Any, relaunch: Any, limit: int = MAX_RELAUNCHES) -> list[Any]:
        seen.append(limit)
        return []

    class _Rt:
        policy = load_policy(policy_file)

    monkeypatch.setattr(watch_module, "recover_crashed", fake_recover)
    assert await watch_module.relaunch_crashed(_Rt()) == []  # type: ignore[arg-type]
    assert seen == [1]


async def test_a_live_run_launched_under_a_higher_limit_stops_a_relaunch(
    monkeypatch, tmp_path: Path
) -> None:
    """The policy's limit lowered to 1 while relaunch 2 (made under the old limit) runs: the watcher
    still reads every key a policy may allow, sees that run live, and launches nothing nor gives up."""
    from runbook.recovery import RELAUNCH_CEILING, RunView

    ledger = open_ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    incident_id = ledger.record_alert(
        Alert(source="generic", delivery_id="c", dedup_key="c")
    ).incident_id
    assert incident_id is not None
    asked: list[int] = []

    async def runs_for(ids: list[int], limit: int = MAX_RELAUNCHES) -> list[RunView]:
        asked.append(limit)
        keys = launch_keys(incident_id, limit)
        states = ["CRASHED", "CRASHED", "RUNNING"]
        return [RunView(id=f"r{n}", key=keys[n], state_type=s) for n, s in enumerate(states)]

    async def launch(incident_id: int, attempt: int) -> None:
        raise AssertionError("nothing may be launched next to a live run")

    monkeypatch.setattr(recovery, "incident_runs", runs_for)
    assert await recover_crashed(_Runtime(ledger), launch, limit=1) == []
    assert asked == [RELAUNCH_CEILING]
    assert not [e for e in ledger.timeline(incident_id) if e.kind == "relaunch_abandoned"]
