"""Cancelling a run from the Prefect UI when ``runbook worker`` forked it: end to end on a real
server, the way the UI cancels (the run set Cancelling), the forked process ends and the run is
Cancelled, not Crashed, and the worker keeps serving."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from flows.worker import FORKRUN_COMMAND
from tests.flows.test_recovery import ROOT, _server, _stop


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie has exited too
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    return True


async def _wait_state(client: Any, run_id: Any, wanted: set[str], timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    while True:
        run = await client.read_flow_run(run_id)
        state = run.state.type.value if run.state else None
        if state in wanted:
            return state
        assert time.monotonic() < deadline, f"the run stayed {state}; wanted {sorted(wanted)}"
        await asyncio.sleep(0.5)


@pytest.mark.timeout(300)
async def test_a_forked_run_cancelled_from_the_ui_ends_and_is_marked_cancelled(
    tmp_path: Path,
) -> None:
    from prefect.client.orchestration import PrefectClient
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.states import Cancelling

    server, api = _server(tmp_path / "prefect")
    worker: subprocess.Popen[bytes] | None = None
    log = (tmp_path / "worker.log").open("wb")
    try:
        async with PrefectClient(api) as client:
            await client.create_work_pool(WorkPoolCreate(name="cancel-pool", type="process"))
        env = dict(
            os.environ,
            PREFECT_API_URL=api,
            PREFECT_HOME=str(tmp_path / "prefect"),
            PREFECT_WORKER_QUERY_SECONDS="1",
        )
        worker = subprocess.Popen(  # noqa: ASYNC220 - returns at once
            [sys.executable, "-m", "runbook.cli", "worker", "--pool", "cancel-pool"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        async with PrefectClient(api) as client:
            deadline = time.monotonic() + 120
            while not await client.read_workers_for_work_pool("cancel-pool"):
                assert worker.poll() is None, "runbook worker exited"
                assert time.monotonic() < deadline, "the worker never reached the server"
                await asyncio.sleep(1)
            flow_id = await client.create_flow_from_name("cancel-probe")
            deployment_id = await client.create_deployment(
                flow_id=flow_id, name="probe", entrypoint="tests/flows/cancel_probe.py:probe",
                path=str(ROOT), work_pool_name="cancel-pool",
                job_variables={"command": FORKRUN_COMMAND, "working_dir": str(ROOT)},
            )  # fmt: skip

            async def start(n: int) -> tuple[Any, int]:
                pid_file = tmp_path / f"pid-{n}"
                run = await client.create_flow_run_from_deployment(
                    deployment_id, parameters={"pid_file": str(pid_file)}
                )
                await _wait_state(client, run.id, {"RUNNING"}, 120)
                deadline = time.monotonic() + 30
                while not pid_file.exists() or not pid_file.read_text():
                    assert time.monotonic() < deadline, "the run never wrote its pid"
                    await asyncio.sleep(0.2)
                return run, int(pid_file.read_text())

            run, pid = await start(1)
            assert _alive(pid)
            # what the UI's Cancel does
            await client.set_flow_run_state(run.id, Cancelling(), force=True)
            assert await _wait_state(client, run.id, {"CANCELLED", "CRASHED", "FAILED"}, 90) == (
                "CANCELLED"
            )
            deadline = time.monotonic() + 30
            while _alive(pid):
                assert time.monotonic() < deadline, "the cancelled run's process is still alive"
                await asyncio.sleep(0.2)
            assert worker.poll() is None, "the worker exited with the cancelled run"

            # and the worker still runs the next one (then cancels it too)
            run2, pid2 = await start(2)
            assert pid2 != pid
            await client.set_flow_run_state(run2.id, Cancelling(), force=True)
            assert await _wait_state(client, run2.id, {"CANCELLED", "CRASHED", "FAILED"}, 90) == (
                "CANCELLED"
            )
    finally:
        if worker is not None and worker.poll() is None:
            os.killpg(worker.pid, signal.SIGTERM)
            try:
                worker.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, signal.SIGKILL)
        log.close()
        _stop(server)
