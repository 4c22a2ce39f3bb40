"""The Prefect servers we start record task runs in batches (``runbook.prefect_server``), and a
stopping server still writes every task run it was told about."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import httpx
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterFlowRunId
from prefect.settings import PREFECT_API_URL, temporary_settings

from runbook.drill.prefect_api import prefect_api as drill_prefect_api
from runbook.prefect_server import (
    PERSISTER_BATCH_SIZE,
    READ_BATCH_SIZE,
    RECORDER_BATCH_SIZE,
    RECORDER_FLUSH_INTERVAL_S,
    SERVER_DEFAULTS,
    server_env,
)

BATCH = "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_BATCH_SIZE"
FLUSH = "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_FLUSH_INTERVAL"


def test_a_value_the_environment_sets_is_kept() -> None:
    """The defaults never override what the operator set; unset ones are filled in."""
    assert server_env({BATCH: "7"}) == {k: v for k, v in SERVER_DEFAULTS.items() if k != BATCH}
    assert server_env({}) == SERVER_DEFAULTS
    assert FLUSH in server_env({BATCH: "7"})


# run in a process of its own: Prefect's events worker is one per process, and one left by an
# earlier test's server in this process would swallow this flow's task-run events
THREE_TASKS = """
from prefect import flow, task

@task
def double(x: int) -> int:
    return 2 * x

@flow
def three_tasks() -> list[int]:
    return [double(i) for i in range(3)]

state = three_tasks(return_state=True)
assert state.is_completed(), state
print(state.state_details.flow_run_id)
"""


def _run_three_tasks(api_url: str) -> str:
    """Run a flow of three tasks against ``api_url`` in a new interpreter; its flow run id."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    done = subprocess.run(  # noqa: S603 - our interpreter, our code
        [sys.executable, "-c", THREE_TASKS],
        env=env | {"PREFECT_API_URL": api_url, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip().splitlines()[-1]


async def _task_runs(flow_run_id: object) -> list[str]:
    async with get_client() as client:
        runs = await client.read_task_runs(
            task_run_filter=TaskRunFilter(flow_run_id=TaskRunFilterFlowRunId(any_=[flow_run_id]))
        )
    return sorted(str(r.state_name) for r in runs)


def test_the_drill_server_is_its_own_batches_task_runs_and_a_stopped_server_kept_them_all(
    tmp_path: Path, prefect_api: str
) -> None:
    """With Prefect's test harness running in this process (the ``prefect_api`` fixture), the
    drill's private server is another server, not the harness's, and stopping it leaves the harness
    answering. It runs with the batching settings (its own /admin/settings says so: task runs
    written in batches, and the event persister, task-run recorder and triggers reading their
    messages in batches), and the task
    runs of a flow that ended just before it stopped are all recorded (read back from the same
    database by a second server)."""
    harness = prefect_api
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        with drill_prefect_api(tmp_path) as url:
            assert url != harness
            settings = httpx.get(f"{url}/admin/settings", timeout=30).json()
            services = settings["server"]["services"]
            recorder = services["task_run_recorder"]
            assert recorder["batch_size"] == RECORDER_BATCH_SIZE
            assert recorder["flush_interval"] == RECORDER_FLUSH_INTERVAL_S
            assert recorder["read_batch_size"] == READ_BATCH_SIZE > 1
            assert services["event_persister"]["read_batch_size"] == READ_BATCH_SIZE
            assert services["event_persister"]["batch_size"] == PERSISTER_BATCH_SIZE > 20
            assert services["triggers"]["read_batch_size"] == READ_BATCH_SIZE
            flow_run_id = _run_three_tasks(url)
        with drill_prefect_api(tmp_path):
            assert asyncio.run(_task_runs(flow_run_id)) == ["Completed"] * 3
    assert httpx.get(f"{harness}/health", timeout=30).status_code == 200
