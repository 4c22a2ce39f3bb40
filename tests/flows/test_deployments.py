"""Deployments: `prefect deploy --all` registers every flow from prefect.yaml, and a run created through
the API (as the Prefect UI does) is started by `runbook serve` (flows.serve.main) and completes.

Order is fixed by a module fixture: `prefect deploy --all` runs once, before anything is served, so the
served test also shows what serving does to deployments `prefect deploy` created.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from prefect.client.orchestration import get_client
from prefect.client.schemas.responses import DeploymentResponse

from flows.runtime import get_ledger
from flows.serve import DEPLOYMENT_NAME, INCIDENT_DEPLOYMENT, build_deployments
from flows.worker import FORKRUN_COMMAND
from runbook.clock import utcnow
from runbook.models import IncidentStatus
from runbook.sandbox import vercel as sb_vercel
from runbook.sandbox.scenarios import apply_scenario
from tests.flows.conftest import TEST_POLICY

ROOT = Path(__file__).resolve().parents[2]
FLOWS = (
    "incident-response",
    "detect",
    "triage",
    "mitigate",
    "communicate",
    "rca",
    "watch",
    "review",
    "digest",
)
pytestmark = pytest.mark.timeout(240)


def _env(prefect_api: str, home: Path) -> dict[str, str]:
    env = dict(
        os.environ,
        PREFECT_API_URL=prefect_api,
        RUNBOOK_HOME=str(home),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_CLI_PROMPT="false",
        PYTHONUNBUFFERED="1",
    )
    env.pop("RUNBOOK_PROJECT_DIR", None)  # the pull step must fall back to the deploying folder
    return env


def _prefect(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).parent / "prefect"), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        stdin=subprocess.DEVNULL,
    )


def _read_all() -> dict[str, DeploymentResponse]:
    async def read() -> dict[str, DeploymentResponse]:
        async with get_client() as client:
            return {
                name: await client.read_deployment_by_name(f"{name}/{DEPLOYMENT_NAME}")
                for name in FLOWS
            }

    return asyncio.run(read())


@pytest.fixture(scope="module")
def deployed(prefect_api: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """`prefect work-pool create` (idempotent with --overwrite) and `prefect deploy --all`, once."""
    env = _env(prefect_api, tmp_path_factory.mktemp("deploy-home"))
    pool = _prefect(["work-pool", "create", "runbook", "--type", "process", "--overwrite"], env)
    assert pool.returncode == 0, pool.stdout + pool.stderr
    deploy = _prefect(["deploy", "--all"], env)
    assert deploy.returncode == 0, deploy.stdout[-3000:] + deploy.stderr[-3000:]
    return {name: dep.model_dump() for name, dep in _read_all().items()}


def test_prefect_deploy_all_registers_every_deployment(deployed: dict[str, Any]) -> None:
    """`prefect deploy --all` creates the nine `<flow>/runbook` deployments on the process pool, each
    described and tagged, with a pull step into this checkout, watch on a one-minute cron and digest
    on a daily one."""
    assert set(deployed) == set(FLOWS)
    for name, dep in deployed.items():
        assert dep["name"] == DEPLOYMENT_NAME and dep["work_pool_name"] == "runbook", name
        assert dep["description"] and "runbook" in dep["tags"], name
        assert dep["pull_steps"] == [
            {"prefect.deployments.steps.set_working_directory": {"directory": str(ROOT)}}
        ], name
    assert deployed["incident-response"]["entrypoint"] == "flows/incident.py:incident_response"
    (schedule,) = deployed["watch"]["schedules"]
    assert schedule["schedule"]["cron"] == "* * * * *" and schedule["active"]
    (daily,) = deployed["digest"]["schedules"]
    assert daily["schedule"]["cron"] == "0 7 * * *" and daily["active"]
    assert all(not deployed[name]["schedules"] for name in FLOWS if name not in ("watch", "digest"))


def test_incident_deployment_form_documents_every_parameter(deployed: dict[str, Any]) -> None:
    """The incident deployment's parameter schema (the UI's run form) carries the Declaration fields
    with their descriptions, the severity choices, and descriptions for the top-level parameters."""
    schema = deployed["incident-response"]["parameter_openapi_schema"]
    assert set(schema["properties"]) == {"incident_id", "declaration", "options"}
    assert all(p.get("description") for p in schema["properties"].values())
    decl = schema["definitions"]["Declaration"]
    assert set(decl["required"]) == {"title", "service", "severity"}
    fields = ("title", "service", "severity", "description", "suspected_scenario")
    assert all(decl["properties"][f].get("description") for f in fields)
    assert schema["definitions"]["Severity"]["enum"] == ["P0", "P1", "P2", "P3"]
    options = schema["definitions"]["Options"]["properties"]
    assert all(p.get("description") for p in options.values())
    # the phase flows document theirs too
    detect = deployed["detect"]["parameter_openapi_schema"]
    assert detect["required"] == ["incident_id"]
    assert detect["properties"]["incident_id"]["description"]


def _run_watch_on_a_worker(
    prefect_api: str, tmp_path: Path, worker: list[str], job_variables: dict[str, Any] | None = None
) -> tuple[Any, str, int]:
    """Create a run of the deployed watch flow, then run ``worker`` (with ``--run-once``) in another
    folder; the run's final state, the worker's output and its exit code."""
    assert _read_all()["watch"].work_pool_name == "runbook", "runs before serve takes over"
    policy = tmp_path / "policy.toml"
    policy.write_text(TEST_POLICY)
    options = {"ledger_url": f"sqlite:///{tmp_path / 'ledger.db'}", "policy_path": str(policy)}

    async def launch() -> Any:
        async with get_client() as client:
            dep = await client.read_deployment_by_name(f"watch/{DEPLOYMENT_NAME}")
            return (
                await client.create_flow_run_from_deployment(
                    dep.id, parameters={"options": options}, job_variables=job_variables
                )
            ).id

    async def final_state(run_id: Any) -> Any:
        async with get_client() as client:
            return (await client.read_flow_run(run_id)).state

    run_id = asyncio.run(launch())
    env = _env(prefect_api, tmp_path / "home") | {"PREFECT_WORKER_QUERY_SECONDS": "1"}
    done = subprocess.run(
        [*worker, "--run-once"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        stdin=subprocess.DEVNULL,
    )
    output = done.stdout[-4000:] + done.stderr[-4000:]
    return asyncio.run(final_state(run_id)), output, done.returncode


def test_process_worker_runs_a_deployed_flow_from_the_project_folder(
    prefect_api, deployed, tmp_path
) -> None:
    """A process worker started in another folder runs a `prefect deploy` deployment (watch) from this
    checkout: the pull step changes into it, and the run completes."""
    prefect = str(Path(sys.executable).parent / "prefect")
    state, output, _ = _run_watch_on_a_worker(
        prefect_api, tmp_path, [prefect, "worker", "start", "--pool", "runbook"]
    )
    assert state is not None and state.is_completed(), output
    # the file entrypoint flows/watch.py only resolves from the project folder, not the worker's
    assert "Deployment step 'set_working_directory' completed successfully" in output, output


def test_runbook_worker_runs_a_deployed_flow_as_a_fork(prefect_api, deployed, tmp_path) -> None:
    """`runbook worker` (a fork server next to `prefect worker start`) runs a `prefect deploy`
    deployment whose job variable `command` is `python -m runbook.forkrun`: the forked child runs the
    pull step into this checkout, loads the file entrypoint, and the run completes; nothing falls back
    to a fresh `python -m prefect.engine`."""
    runbook = str(Path(sys.executable).parent / "runbook")
    state, output, code = _run_watch_on_a_worker(
        prefect_api,
        tmp_path,
        [runbook, "worker", "--pool", "runbook"],
        job_variables={"command": FORKRUN_COMMAND},
    )
    assert state is not None and state.is_completed(), output
    assert code == 0, output
    assert "flows.forkserver: ready" in output, output
    assert "running python -m prefect.engine instead" not in output, output
    assert "Deployment step 'set_working_directory' completed successfully" in output, output


def _module_entrypoint(file_entrypoint: str) -> str:
    path, func = file_entrypoint.split(":")
    return f"{path.removesuffix('.py').replace('/', '.')}.{func}"


def test_build_deployments_matches_prefect_yaml() -> None:
    """flows.serve builds the same nine deployments as prefect.yaml (names, flows, descriptions, tags,
    the watch cron), with module entrypoints and no work pool."""
    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]
    by_entry = {_module_entrypoint(d["entrypoint"]): d for d in spec}
    built = build_deployments()
    assert INCIDENT_DEPLOYMENT == "incident-response/runbook"
    assert sorted(str(d.flow_name) for d in built) == sorted(FLOWS)
    assert sorted(d.entrypoint or "" for d in built) == sorted(by_entry)
    for dep in built:
        want = by_entry[dep.entrypoint or ""]
        assert (dep.name, dep.description, dep.tags) == (
            want["name"],
            want["description"],
            want["tags"],
        )
        crons = [getattr(s.schedule, "cron", None) for s in dep.schedules or []]
        assert crons == [s["cron"] for s in want.get("schedules", [])], dep.flow_name
        assert dep.work_pool_name is None and "work_pool_name" in dep.model_fields_set


async def _wait_until_served(client: Any, since: Any, log: Path) -> DeploymentResponse:
    deadline = time.monotonic() + 60
    while True:  # serve is up once its runner has polled the (re-applied) deployment
        dep = await client.read_deployment_by_name(INCIDENT_DEPLOYMENT)
        if dep.last_polled is not None and dep.last_polled >= since:
            return dep
        if time.monotonic() > deadline:
            tail = await asyncio.to_thread(log.read_text)
            raise AssertionError("serve never polled its deployments:\n" + tail[-3000:])
        await asyncio.sleep(0.3)


def _stop(proc: subprocess.Popen[bytes]) -> int | None:
    """SIGTERM, as a process manager stops it; the exit code, or None if it had to be killed."""
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
        return None


def test_served_deployment_runs_a_declared_incident(
    world, prefect_api, flow_env, deployed, tmp_path
) -> None:
    """A run of incident-response/runbook created through the API, as the UI does, is started by
    `python -m flows.serve` and completes with the bad deploy rolled back and the incident resolved;
    serve takes over the deployments `prefect deploy` made and stops cleanly on SIGTERM."""
    policy = tmp_path / "policy.toml"
    policy.write_text(TEST_POLICY)
    ledger_url = f"sqlite:///{tmp_path / 'ledger.db'}"
    good = sb_vercel.current_production(world)
    apply_scenario(world, "bad-deploy")
    params = {
        "declaration": {
            "title": "Checkout errors after deploy",
            "service": "web",
            "severity": "P1",
        },
        "options": {"speed": 100, "ledger_url": ledger_url, "policy_path": str(policy)},
    }

    async def launch_and_wait(log: Path) -> tuple[DeploymentResponse, str, float | None]:
        async with get_client() as client:
            dep = await _wait_until_served(client, since, log)
            run = await client.create_flow_run_from_deployment(dep.id, parameters=params)
            created, started = time.monotonic(), None
            while time.monotonic() < created + 150:
                state = (await client.read_flow_run(run.id)).state
                if started is None and state and (state.is_running() or state.is_final()):
                    started = time.monotonic() - created
                if state and state.is_final():
                    return dep, state.type.value, started
                await asyncio.sleep(0.2)
            return dep, "TIMEOUT", started

    log_path = tmp_path / "serve.log"
    since = utcnow()
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "flows.serve"],
            cwd=ROOT,
            env=_env(prefect_api, tmp_path / "home"),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        try:
            dep, final, started = asyncio.run(launch_and_wait(log_path))
        finally:
            code = _stop(proc)
    # timing targets belong to benchmarks: record the delay, assert only a generous bound
    print(
        f"\nserved run began {started:.1f} s after it was created" if started else "\nnot started"
    )
    output = log_path.read_text()[-4000:]
    assert final == "COMPLETED", output
    assert started is not None and started <= 15
    assert code == 0, f"serve exited with {code} on SIGTERM:\n{output}"

    ledger = get_ledger(ledger_url)
    (incident,) = ledger.list_incidents()
    timeline = "\n".join(f"{e.kind}: {e.message}" for e in ledger.timeline(incident.id))
    assert incident.resolved_at is not None and incident.status is IncidentStatus.CLOSED, timeline
    now_serving = sb_vercel.current_production(world)
    assert good is not None and now_serving is not None and now_serving.uid == good.uid

    # serve re-applied the deployment `prefect deploy` made (same id): module entrypoint, no work pool,
    # no pull steps; stopping it paused the schedules
    assert dep.id == deployed["incident-response"]["id"]
    assert dep.entrypoint == "flows.incident.incident_response"
    assert dep.work_pool_name is None and not dep.pull_steps
    after = _read_all()
    assert all(d.paused for d in after.values())


def test_serve_stops_cleanly_on_sigint(prefect_api, deployed, tmp_path) -> None:
    """main(limit=..., poll_seconds=...) serves (un-paused) until Ctrl-C, then exits 0 without a
    traceback and leaves the deployments paused."""
    log_path = tmp_path / "serve.log"
    code = (
        "from flows.serve import main; main(limit=2, poll_seconds=0.5); "
        "print('main returned', flush=True)"
    )

    async def wait_served(log: Path) -> DeploymentResponse:
        async with get_client() as client:
            return await _wait_until_served(client, since, log)

    since = utcnow()
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-c", code],
            cwd=ROOT,
            env=_env(prefect_api, tmp_path / "home"),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        try:
            while_served = asyncio.run(wait_served(log_path))
            proc.send_signal(signal.SIGINT)
            exit_code = proc.wait(30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
    output = log_path.read_text()
    assert not while_served.paused
    assert exit_code == 0 and "main returned" in output, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    assert all(d.paused for d in _read_all().values())


def test_prefect_deploy_after_serve_hands_the_deployments_back(
    prefect_api, deployed, tmp_path
) -> None:
    """Runs after serving: the pool setup and `prefect deploy --all` again put the same deployments
    (same ids) back on the work pool with their pull step and file entrypoints, un-paused."""
    env = _env(prefect_api, tmp_path)
    pool = _prefect(["work-pool", "create", "runbook", "--type", "process", "--overwrite"], env)
    assert pool.returncode == 0, "creating the pool again is harmless: " + pool.stdout + pool.stderr
    deploy = _prefect(["deploy", "--all"], env)
    assert deploy.returncode == 0, deploy.stdout[-3000:] + deploy.stderr[-3000:]
    after = _read_all()
    for name, dep in after.items():
        assert dep.id == deployed[name]["id"], name
        assert dep.work_pool_name == "runbook" and not dep.paused, name
        assert dep.pull_steps == deployed[name]["pull_steps"], name
        assert dep.entrypoint == deployed[name]["entrypoint"], name
