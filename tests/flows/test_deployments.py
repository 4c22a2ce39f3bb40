"""Deployments: `prefect deploy --all` registers every flow, and a run created through the API (as the
Prefect UI does) is picked up by `runbook serve` and completes."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client

from flows.runtime import get_ledger
from runbook.clock import utcnow
from runbook.sandbox.scenarios import apply_scenario
from tests.flows.conftest import TEST_POLICY

ROOT = Path(__file__).resolve().parents[2]
FLOWS = ("incident-response", "detect", "triage", "mitigate", "communicate", "rca", "watch")
pytestmark = pytest.mark.timeout(240)


def _env(prefect_api: str, home: Path) -> dict[str, str]:
    return dict(
        os.environ,
        PREFECT_API_URL=prefect_api,
        RUNBOOK_HOME=str(home),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_CLI_PROMPT="false",
    )


def _prefect(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).parent / "prefect"
    return subprocess.run(
        [str(exe), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        stdin=subprocess.DEVNULL,
    )


def test_prefect_deploy_all_registers_every_deployment(prefect_api, tmp_path) -> None:
    """`prefect deploy --all` creates the seven deployments, and the incident one's form has the
    declaration fields with their descriptions and the severity choices."""
    env = _env(prefect_api, tmp_path)
    pool = _prefect(["work-pool", "create", "runbook", "--type", "process", "--overwrite"], env)
    assert pool.returncode == 0, pool.stdout + pool.stderr
    deploy = _prefect(["deploy", "--all"], env)
    assert deploy.returncode == 0, deploy.stdout[-3000:] + deploy.stderr[-3000:]

    async def read() -> dict[str, dict]:
        async with get_client() as client:
            return {
                name: (await client.read_deployment_by_name(f"{name}/runbook")).model_dump()
                for name in FLOWS
            }

    found = asyncio.run(read())
    assert set(found) == set(FLOWS)
    assert found["watch"]["schedules"], "watch runs on a schedule"
    schema = found["incident-response"]["parameter_openapi_schema"]
    decl = schema["definitions"]["Declaration"]
    assert {"title", "service", "severity"} <= set(decl["required"])
    assert decl["properties"]["title"]["description"]
    assert schema["definitions"]["Severity"]["enum"] == ["P0", "P1", "P2", "P3"]


def test_served_deployment_runs_a_declared_incident(world, prefect_api, flow_env, tmp_path) -> None:
    """A run of incident-response/runbook created through the API is started by `runbook serve`
    (flows.serve.main) and completes with the incident resolved."""
    policy = tmp_path / "policy.toml"
    policy.write_text(TEST_POLICY)
    ledger_url = f"sqlite:///{tmp_path / 'ledger.db'}"
    apply_scenario(world, "bad-deploy")
    launched_at = utcnow()
    log_path = tmp_path / "serve.log"
    log = log_path.open("w")
    server = subprocess.Popen(
        [sys.executable, "-c", "from flows.serve import main; main()"],
        cwd=ROOT,
        env=_env(prefect_api, tmp_path),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        params = {
            "declaration": {
                "title": "Checkout errors after deploy",
                "service": "web",
                "severity": "P1",
            },
            "options": {"speed": 100, "ledger_url": ledger_url, "policy_path": str(policy)},
        }

        async def launch_and_wait() -> tuple[str, float | None]:
            async with get_client() as client:
                deadline = time.monotonic() + 60
                while True:  # serve is up once its runner polls the deployment
                    try:
                        dep = await client.read_deployment_by_name("incident-response/runbook")
                        if dep.last_polled is not None and dep.last_polled >= launched_at:
                            break
                    except Exception:  # noqa: BLE001 - not registered yet
                        pass
                    assert time.monotonic() < deadline, "serve never polled its deployments"
                    await asyncio.sleep(0.5)
                run = await client.create_flow_run_from_deployment(dep.id, parameters=params)
                created, started = time.monotonic(), None
                end = created + 150
                while time.monotonic() < end:
                    state = (await client.read_flow_run(run.id)).state
                    if started is None and state and state.type.value in ("RUNNING", "COMPLETED"):
                        started = time.monotonic() - created
                    if state and state.is_final():
                        return state.type.value, started
                    await asyncio.sleep(0.5)
                return "TIMEOUT", started

        final, started = asyncio.run(launch_and_wait())
        print(
            f"served run started {started:.1f} s after it was created"
            if started
            else "never started"
        )
        assert final == "COMPLETED", log_path.read_text()[-4000:]
        assert started is not None and started < 15
        ledger = get_ledger(ledger_url)
        incidents = ledger.list_incidents()
        assert len(incidents) == 1
        timeline = "\n".join(f"{e.kind}: {e.message}" for e in ledger.timeline(incidents[0].id))
        assert incidents[0].resolved_at is not None, timeline
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
