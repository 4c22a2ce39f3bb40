"""Browser tests: a real `prefect server start` (which serves the UI; the session test harness does not),
the deployments served by `python -m flows.serve` against it, the sandbox world with blocks pointing at
it, and Debian's Chromium driven by Playwright.

The server runs on a fresh PostgreSQL database with a temporary PREFECT_HOME; it is not the session's test harness (which keeps
serving the other tests): a test here points the Prefect client at it only while it runs (``ui``).
On failure the page is saved as a screenshot under test-artifacts/browser/ (git-ignored).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from runbook.ports import free_port
from runbook.sandbox.app import create_app, reset_world
from runbook.sandbox.core import DEFAULT_TOKEN, World
from runbook.sandbox.server import RunningServer, serve_in_thread
from tests.conftest import (
    PG_HOST,
    PG_PORT,
    PG_USER,
    drop_pg_database,
    make_pg_database,
    require_service,
)
from tests.flows.conftest import TEST_POLICY, save_blocks

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "browser"
CHROMIUM = "/usr/bin/chromium"
# On a closed network Chromium's background connections (updates, safe browsing, first-run) fail
# noisily and slowly; a fresh profile per test keeps runs independent.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
INCIDENT_DEPLOYMENT = "incident-response/runbook"


@dataclass
class UIWorld:
    """What the browser tests run against."""

    ui_url: str  # the Prefect UI (and API under /api)
    api_url: str
    ledger_url: str  # the ledger `runbook serve` uses when a run names none
    world: World
    sandbox: RunningServer
    serve_log: Path


@dataclass
class PrefectServer:
    """A `prefect server start` process, maybe still starting."""

    ui_url: str
    api_url: str
    proc: subprocess.Popen[bytes]
    log: Path

    def wait_up(self, timeout_s: float = 150) -> None:
        """Return once the API answers its health check; fail with the server's log if it does not."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if httpx.get(f"{self.api_url}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail("`prefect server start` did not come up:\n" + _tail(self.log))
            time.sleep(0.3)


# `python -m flows.serve`, except that it imports the flows while the server is still starting and
# calls flows.serve.main() once the API (argv[1]) answers: on 2 cores both start-ups overlap.
SERVE_WHEN_UP = """
import sys, time
import httpx
import flows.incident, flows.watch
from flows.serve import main

deadline = time.monotonic() + 150
while True:
    try:
        if httpx.get(sys.argv[1], timeout=2).status_code == 200:
            break
    except httpx.HTTPError:
        pass
    if time.monotonic() > deadline:
        sys.exit(f"the Prefect API at {sys.argv[1]} never answered")
    time.sleep(0.3)
main()
"""


def _prefect_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "RUNBOOK_"))}
    return env | {
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PYTHONUNBUFFERED": "1",
    }


def _tail(path: Path, chars: int = 3000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else "(no log)"


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@pytest.fixture(scope="session")
def chromium() -> str:
    """Playwright and Debian's Chromium are installed (else skip here, fail in CI)."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        require_service("Playwright", "install the dev extras: pip install -e '.[dev]'")
    if not os.access(CHROMIUM, os.X_OK):
        require_service("Chromium", f"{CHROMIUM} is missing: apt-get install -y chromium")
    return CHROMIUM


@pytest.fixture(scope="session")
def prefect_ui_server(
    chromium: str, pg_admin_dsn: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PrefectServer]:
    """`prefect server start` on a free port with the (classic) UI, on a database of its own in the
    local PostgreSQL (SQLite's single writer made the UI's resume fail with "database is locked" on a
    busy machine). Yields as soon as it is launched: ``wait_up()`` before using it."""
    base = tmp_path_factory.mktemp("prefect-ui")
    database = make_pg_database("runbook_ui")
    port = free_port()
    ui_url, api_url = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{port}/api"
    db_url = f"postgresql+asyncpg://{PG_USER}@{PG_HOST}:{PG_PORT}/{database}"
    env = (
        _prefect_env(base / "home")
        | {
            "PREFECT_API_DATABASE_CONNECTION_URL": db_url,
            "PREFECT_UI_ENABLED": "true",
            "PREFECT_UI_API_URL": api_url,
            "PREFECT_SERVER_UI_V2_ENABLED": "false",
            "PREFECT_SERVER_UI_SHOW_PROMOTIONAL_CONTENT": "false",
        }
        | {
            # Only the services these tests see (events and task runs, shown by the UI): runs here are
            # started by hand, so no scheduler (and no minutely watch runs to compete with them), and none
            # of the housekeeping loops, which cost CPU on a shared 2-core machine.
            f"PREFECT_SERVER_SERVICES_{name}_ENABLED": "false"
            for name in (
                "SCHEDULER",
                "LATE_RUNS",
                "FOREMAN",
                "CANCELLATION_CLEANUP",
                "PAUSE_EXPIRATIONS",
                "REPOSSESSOR",
                "TRIGGERS",
                "CLEANUP_RECONCILER",
            )
        }
    )
    log_path = base / "server.log"
    proc: subprocess.Popen[bytes] | None = None
    try:
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [str(Path(sys.executable).parent / "prefect"), "server", "start"]
                + ["--host", "127.0.0.1", "--port", str(port)],
                env=env,
                cwd=base,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        yield PrefectServer(ui_url, api_url, proc, log_path)
    finally:
        if proc is not None:
            _stop(proc)
        drop_pg_database(database)


@pytest.fixture(scope="session")
def ui_world(
    prefect_ui_server: PrefectServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[UIWorld]:
    """The sandbox world on a port, its blocks saved on the UI server, and `runbook serve`
    (flows.serve.main) serving every deployment there (runs it starts use a SQLite ledger and the
    test policy unless their options name others)."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound
    from prefect.settings import PREFECT_API_URL, temporary_settings

    server = prefect_ui_server
    ui_url, api_url = server.ui_url, server.api_url
    base = tmp_path_factory.mktemp("ui-world")
    world = World(token=DEFAULT_TOKEN, seed=77)
    sandbox = serve_in_thread(create_app(world))
    policy = base / "policy.toml"
    policy.write_text(TEST_POLICY)
    ledger_url = f"sqlite:///{base / 'ledger.db'}"
    log_path = base / "serve.log"
    proc: subprocess.Popen[bytes] | None = None
    try:
        env = _prefect_env(base / "prefect-home") | {
            "PREFECT_API_URL": api_url,
            "PREFECT_UI_URL": ui_url,
            "RUNBOOK_HOME": str(base / "runbook-home"),
            "RUNBOOK_LEDGER_URL": ledger_url,
            "RUNBOOK_POLICY": str(policy),
        }
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-c", SERVE_WHEN_UP, f"{api_url}/health"],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        server.wait_up()
        with temporary_settings(updates={PREFECT_API_URL: api_url}):
            save_blocks(sandbox.url, None)
            deadline = time.monotonic() + 90
            with get_client(sync_client=True) as client:
                while True:  # serving once its runner has polled the deployment
                    try:
                        dep = client.read_deployment_by_name(INCIDENT_DEPLOYMENT)
                        polled = dep.last_polled is not None
                    except ObjectNotFound:  # not registered yet
                        polled = False
                    if polled:
                        break
                    if proc.poll() is not None or time.monotonic() > deadline:
                        pytest.fail("`runbook serve` never served:\n" + _tail(log_path))
                    time.sleep(0.3)
        yield UIWorld(ui_url, api_url, ledger_url, world, sandbox, log_path)
    finally:
        if proc is not None:
            _stop(proc)
        sandbox.stop()


@pytest.fixture
def ui(ui_world: UIWorld) -> Iterator[UIWorld]:
    """The UI world with a fresh sandbox; the Prefect client points at the UI server meanwhile."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    reset_world(ui_world.world)
    with temporary_settings(updates={PREFECT_API_URL: ui_world.api_url}):
        yield ui_world
    reset_world(ui_world.world)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[Any]
) -> Generator[None, Any, None]:
    """Keep each phase's report on the item, so that ``page`` knows whether the test failed."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"report_{report.when}", report)


@pytest.fixture
def page(chromium: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """A Chromium page (headless, fresh profile); a screenshot of it is saved if the test fails."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=chromium,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 1000},
        )
        context.set_default_timeout(20_000)
        pg = context.new_page()
        try:
            yield pg
        finally:
            report = getattr(request.node, "report_call", None)
            if report is None or report.failed:
                ARTIFACTS.mkdir(parents=True, exist_ok=True)
                shot = ARTIFACTS / f"{request.node.name}.png"
                try:
                    pg.screenshot(path=str(shot), full_page=True)
                    print(f"\nscreenshot of the failed page: {shot} (at {pg.url})")
                except Exception as exc:  # noqa: BLE001 - the page may be gone
                    print(f"\nno screenshot: {exc}")
            context.close()
