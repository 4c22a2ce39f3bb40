"""``runbook drill``: a realistic incident, end to end, on embedded defaults.

1. A simulated production (the sandbox world) starts on a loopback port; blocks named ``drill`` point
   at it (a shared Prefect server's real blocks are never touched).
2. The alert gateway starts in-process with a fresh bearer token, over the drill's own SQLite ledger.
3. The scenario's fault is injected. The drill's alerting rules scrape the app's metrics like
   Prometheus, and the firing ones go to the gateway as an Alertmanager notification.
4. The gateway opens the incident and its outbox launches the incident flow (in this process), which
   runs every phase against its SLA with the clock compressed by ``--speed``; a live table shows it.
5. The result is read back from the ledger: summary table, RCA and chart paths, JSON report.

Everything a drill writes lives in its own folder under ``$RUNBOOK_HOME/drills/``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, SecretStr
from rich.console import Console, Group
from rich.live import Live
from rich.text import Text

from runbook.clock import utcnow
from runbook.drill.report import DrillReport, build_report, phase_rows, phase_table
from runbook.errors import RunbookError
from runbook.sandbox.scenarios import SCENARIOS

DRILL_SCENARIOS = [name for name in SCENARIOS if name != "healthy"]
DEFAULT_SCENARIO = "bad-deploy"
DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DRILL_APP_ROLE = "runbook_drill_app"
# The runbook automates one branch of each scenario; a drill stages that one. High error rates are
# rolled back when they began with a deploy, and otherwise escalated to a person (the flow tests cover
# that branch), so the drill's errors come with a deployment.
SCENARIO_PARAMS: dict[str, dict[str, Any]] = {"high-error-rate": {"after_deploy": True}}


def alert_lead_s(scenario: str, speed: float) -> float:
    """Real seconds a scenario's fault lasts before its alert may fire.

    db-degradation: the PostgresTarget's long-query threshold (300 s by default, the runbook's "Kill
    long-running queries ... query_start < NOW() - INTERVAL '5 minutes'"), compressed by the speed.
    That is what triage counts as long-running and what the DB playbook terminates, and a database
    alert rule holds that long before it pages (Prometheus ``for: 5m``). Without the lead the alert
    came 1-2 s after the fault at 100x (100-200 clock seconds), and a triage that looked before the
    slow query was 3 s old found none and ranked the incident high-error-rate (2 drills of 9).
    """
    if scenario != "db-degradation":
        return 0.0
    from blocks.postgres import PostgresTarget

    threshold = PostgresTarget.model_fields["long_query_threshold_s"].default
    return float(threshold) / speed


SANDBOX_VENDORS_WITH_FAULTS = ("vercel", "supabase", "slack", "pagerduty", "statuspage", "github")


class DrillError(RunbookError):
    """The drill cannot run as asked (unknown scenario, no database ...); the message says what to do."""


class DrillSettings(BaseModel):
    """What ``runbook drill`` was asked to do."""

    scenario: str = DEFAULT_SCENARIO
    speed: float = Field(100.0, gt=0, le=10_000)
    dry_run: bool = False
    faults: float = Field(0.0, ge=0, le=0.5)
    database_url: str | None = None
    json_path: Path | None = None
    timeout_s: float = Field(600.0, gt=0)
    seed: int = 7
    credentials: dict[str, str] | None = Field(
        None,
        repr=False,
        description="Credential per sandbox system (tests: sentinels); else random.",
    )


def check_scenario(name: str) -> str:
    """The scenario, or DrillError listing the known ones."""
    if name not in DRILL_SCENARIOS:
        raise DrillError(
            f"unknown scenario {name!r}; known scenarios: {', '.join(DRILL_SCENARIOS)}"
        )
    return name


def drill_policy_text(default_policy_actions: dict[str, dict[str, Any]]) -> str:
    """The drill's policy overlay: actions the policy leaves to approval run on their own.

    A drill has nobody at the keyboard to answer an approval; the production policy is otherwise
    unchanged ("never" stays never). The overlay is written next to the drill's ledger.
    """
    lines = [
        "# runbook drill: 'approve' actions run as 'auto' (nobody answers approvals in a drill)"
    ]
    for action, modes in sorted(default_policy_actions.items()):
        changed = {sev: "auto" for sev, mode in modes.items() if mode == "approve"}
        if changed:
            lines.append(f"[actions.{action}]")
            lines += [f'{sev} = "{mode}"' for sev, mode in sorted(changed.items())]
    return "\n".join(lines) + "\n"


def _pg_reachable(dsn: str) -> str | None:
    """None when ``dsn`` accepts a connection, else why not."""
    import psycopg

    try:
        with psycopg.connect(dsn, connect_timeout=3):
            return None
    except psycopg.Error as exc:
        return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def prepare_database(admin_dsn: str) -> str:
    """A plain login role for the simulated app's sessions (terminable, unlike a superuser's).

    Returns:
        The app role's DSN (a fresh random password each drill).

    Raises:
        DrillError: the database is unreachable or refuses to create the role.
    """
    import psycopg
    from psycopg import sql
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    why = _pg_reachable(admin_dsn)
    if why is not None:
        raise DrillError(
            "the db-degradation drill needs a PostgreSQL it may run a slow query on and terminate "
            f"it: {_describe_dsn(admin_dsn)} is not reachable ({why}). Start PostgreSQL, or point "
            "the drill at one with --database-url postgresql://USER@HOST:5432/DB (a role allowed to "
            "CREATE ROLE)."
        )
    password = secrets.token_urlsafe(18)
    try:
        with psycopg.connect(admin_dsn, autocommit=True, connect_timeout=5) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_roles WHERE rolname = %s", (DRILL_APP_ROLE,)
            ).fetchone()
            verb = "ALTER" if exists else "CREATE"
            conn.execute(
                sql.SQL(verb + " ROLE {} LOGIN PASSWORD {}").format(
                    sql.Identifier(DRILL_APP_ROLE), sql.Literal(password)
                )
            )
    except psycopg.Error as exc:
        raise DrillError(
            f"cannot prepare the drill's app role on {_describe_dsn(admin_dsn)}: "
            f"{type(exc).__name__}; use --database-url with a role allowed to CREATE ROLE"
        ) from None
    params = conninfo_to_dict(admin_dsn)
    params.update(user=DRILL_APP_ROLE, password=password)
    return make_conninfo(**params)  # type: ignore[arg-type]


def _describe_dsn(dsn: str) -> str:
    """host:port/db of a DSN, without user or password."""
    from psycopg.conninfo import conninfo_to_dict

    try:
        p = conninfo_to_dict(dsn)
    except Exception:  # noqa: BLE001 - a malformed DSN: say so without echoing it
        return "the given DSN (malformed)"
    return f"{p.get('host', 'localhost')}:{p.get('port', 5432)}/{p.get('dbname', '')}"


def quiet_prefect_console() -> None:
    """Prefect's console log lines would tear the live table; they still go to the Prefect API.

    Only before Prefect is imported (its logging setup reads the override once); later it would
    change nothing here and only leak into subprocesses.
    """
    import sys

    if "prefect" in sys.modules:
        return
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING")
    # the drill keeps the edge functions' sources outside a flow run, as the watcher would inside one
    os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")


def _free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@dataclass
class DrillRun:
    """The state of one drill while it runs (for cleanup and for the Ctrl-C message)."""

    settings: DrillSettings
    folder: Path
    ledger_url: str
    console: Console
    t0: float = field(default_factory=time.monotonic)
    blocks: str = field(default_factory=lambda: _block_name())
    private_server: bool = False
    incident_id: int | None = None
    alert_sent_at: datetime | None = None
    flow_result: dict[str, Any] | None = None
    launched: dict[int, asyncio.Task[Any]] = field(default_factory=dict)

    async def launch(self, incident_id: int) -> None:
        """The gateway's launcher: run the incident flow in this process (once per incident)."""
        from flows.incident import incident_response

        if incident_id not in self.launched:
            self.launched[incident_id] = asyncio.create_task(
                incident_response(incident_id=incident_id, options=self.options)
            )

    def say(self, message: str) -> None:
        """A progress line, stamped with the seconds since the drill started."""
        self.console.print(f"[dim]{time.monotonic() - self.t0:6.1f}s[/] {message}", highlight=False)

    @property
    def options(self) -> Any:
        from flows.runtime import Options

        return Options(
            dry_run=self.settings.dry_run,
            speed=self.settings.speed,
            policy_path=str(self.folder / "policy.toml"),
            ledger_url=self.ledger_url,
            systems=self.systems,
        )

    @property
    def systems(self) -> Any:
        from runbook.drill.world import drill_systems

        return drill_systems(self.blocks, postgres=self.settings.database_url is not None)


async def _gateway(run: DrillRun, ledger: Any, token: str) -> tuple[Any, str, asyncio.Task[Any]]:
    import uvicorn

    from runbook.gateway.app import create_app
    from runbook.gateway.config import GatewayConfig

    app = create_app(ledger, GatewayConfig(token=SecretStr(token)), launcher=run.launch)
    sock = _free_socket()

    class _InProcessServer(uvicorn.Server):
        """uvicorn that leaves Ctrl-C to the drill (its own handler would re-raise it mid-cleanup)."""

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

    server = _InProcessServer(
        uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on")
    )
    task = asyncio.create_task(server.serve(sockets=[sock]))
    for _ in range(500):
        if server.started:
            break
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    return server, f"http://127.0.0.1:{sock.getsockname()[1]}", task


async def _raise_alert(run: DrillRun, prod: Any, policy: Any, gateway_url: str, token: str) -> int:
    """Watch the app like Prometheus would, and send the firing alerts through the gateway."""
    from runbook.clients.app import AppClient
    from runbook.drill import alerting
    from runbook.sandbox.scenarios import apply_scenario

    async with AppClient(f"{prod.url}/app/api/health", f"{prod.url}/app/metrics") as app:
        base = await alerting.observe(app, policy, 0.5)
        if base.firing:
            raise DrillError(
                "the simulated production is unhealthy before the fault: "
                + ", ".join(f.metric for f in base.firing)
            )
        info = await asyncio.to_thread(
            apply_scenario,
            prod.world,
            run.settings.scenario,
            **SCENARIO_PARAMS.get(run.settings.scenario, {}),
        )
        started = utcnow()
        run.say(f"[bold]fault injected[/]: {info['description']}")
        lead = alert_lead_s(run.settings.scenario, run.settings.speed)
        if lead > 0:
            run.say(f"the fault lasts {lead:.1f} s ({lead * run.settings.speed / 60:g} min at 1x) "
                    "before its alert rule may fire")  # fmt: skip
            await asyncio.sleep(lead)
        for _ in range(20):
            obs = await alerting.observe(app, policy, 1.0)
            if obs.firing:
                break
        else:
            raise DrillError("no alerting rule fired within 20 s of the fault")
    body = alerting.alertmanager_notification(policy, obs, "web", started)
    firing = ", ".join(f"{f.metric}={f.value:.2f}" for f in obs.firing)
    run.say(f"[bold]alert firing[/]: {firing} -> POST {gateway_url}/hooks/alertmanager")
    run.alert_sent_at = utcnow()
    answer = await alerting.send(gateway_url, token, body)
    incidents = answer.get("incidents") or []
    if not isinstance(incidents, list) or not incidents:
        raise DrillError(f"the gateway accepted the alert but opened no incident: {answer}")
    incident_id = int(incidents[0])
    run.say(f"[bold]gateway[/]: {answer.get('status')} -> INC-{incident_id}")
    return incident_id


def _progress(run: DrillRun, ledger: Any) -> Group:
    from runbook.timings import incident_timings

    assert run.incident_id is not None
    inc = ledger.get_incident(run.incident_id)
    timeline = ledger.timeline(run.incident_id)
    now = utcnow()
    rows = phase_rows(incident_timings(inc, timeline, ledger.deadlines(run.incident_id)), now)
    title = f"INC-{inc.id} {inc.title} ({inc.severity.value}, {inc.status.value})"
    recent = Text(
        "\n".join(
            f"  {e.at.strftime('%H:%M:%S')} {e.kind}: {e.message[:110]}" for e in timeline[-6:]
        ),
        style="dim",
    )
    return Group(phase_table(rows, run.settings.speed, title=title), recent)


async def _follow(run: DrillRun, ledger: Any) -> None:
    """Show each phase against its SLA, live, until the incident flow returns."""
    assert run.incident_id is not None
    loop = asyncio.get_running_loop()
    launch_by, deadline = loop.time() + 30, loop.time() + run.settings.timeout_s
    while run.incident_id not in run.launched:
        if loop.time() > launch_by:
            raise DrillError("the gateway did not launch the incident flow within 30 s")
        await asyncio.sleep(0.05)
    task = run.launched[run.incident_id]
    with Live(
        await asyncio.to_thread(_progress, run, ledger),
        console=run.console,
        refresh_per_second=4,
        transient=True,
    ) as live:
        while not task.done():
            if loop.time() > deadline:
                task.cancel()
                raise DrillError(
                    f"the incident flow did not finish within {run.settings.timeout_s:.0f} s"
                )
            await asyncio.wait({task}, timeout=0.5)
            live.update(await asyncio.to_thread(_progress, run, ledger))
    run.flow_result = task.result()


async def _drill(run: DrillRun, prod: Any) -> DrillReport:
    """The drill's async part; Ctrl-C cancels the work, cleans up in order, then raises."""
    import signal

    from runbook.drill.world import delete_blocks, save_sandbox_blocks
    from runbook.ledger import open_ledger

    await save_sandbox_blocks(prod.url, prod.credentials, run.settings.database_url, run.systems)
    ledger = open_ledger(run.ledger_url)
    token = secrets.token_urlsafe(24)
    server, gateway_url, served = await _gateway(run, ledger, token)
    work = asyncio.create_task(_work(run, prod, ledger, gateway_url, token))
    loop = asyncio.get_running_loop()
    interrupted = False

    def on_sigint() -> None:
        nonlocal interrupted
        interrupted = True
        work.cancel()

    loop.add_signal_handler(signal.SIGINT, on_sigint)
    try:
        return await work
    except asyncio.CancelledError:
        if interrupted:
            raise KeyboardInterrupt from None
        raise
    finally:
        loop.remove_signal_handler(signal.SIGINT)
        for task in run.launched.values():  # a cancelled flow run is reported as such to Prefect
            if not task.done():
                task.cancel()
            with contextlib.suppress(BaseException):
                await task
        server.should_exit = True
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(served, 10)
        ledger.close()
        with contextlib.suppress(Exception):
            await delete_blocks(run.systems)


async def _work(run: DrillRun, prod: Any, ledger: Any, gateway_url: str, token: str) -> DrillReport:
    from blocks import SupabaseProject
    from runbook.policy import load_policy
    from tasks.supabase import snapshot_functions

    if run.private_server:
        # the review deployment (not served: its reminder runs stay scheduled, visible in the UI),
        # so a resolved drill incident gets its post-incident reviews as in production
        from flows.serve import build_deployments

        review = next(d for d in build_deployments() if d.flow_name == "review")
        await review.apply()  # type: ignore[misc]  # async_dispatch: a coroutine here
    # what the deployed watcher does every minute: keep each healthy edge function's source (the
    # task's function: as a task run outside any flow run, Prefect warned that its logs had no flow
    # run to go to)
    await snapshot_functions.fn(await SupabaseProject.aload(run.systems.supabase), run.ledger_url)
    run.say(f"blocks '{run.blocks}' saved; alert gateway on {gateway_url} (bearer token)")
    policy = load_policy(run.folder / "policy.toml")
    run.incident_id = await _raise_alert(run, prod, policy, gateway_url, token)
    await _follow(run, ledger)
    run.say(f"incident flow finished: {(run.flow_result or {}).get('status')}")
    report = await asyncio.to_thread(
        build_report,
        ledger,
        run.incident_id,
        scenario=run.settings.scenario,
        speed=run.settings.speed,
        dry_run=run.settings.dry_run,
        alert_sent_at=run.alert_sent_at,
        notifications=prod.notifications(),
        rca_path=(run.flow_result or {}).get("rca_path"),
    )
    report.reminders = await asyncio.to_thread(_reminders, ledger, run.incident_id)
    report.ledger_url = run.ledger_url
    report.folder = str(run.folder)
    return report


def _reminders(ledger: Any, incident_id: int) -> list[Any]:
    """The post-incident reviews scheduled for the incident (recorded in the ledger)."""
    from runbook.drill.report import ReminderRow

    return [
        ReminderRow(kind=r.review_key, due_at=r.scheduled_for)
        for r in ledger.review_runs(incident_id)
    ]


def _block_name() -> str:
    from runbook.drill.world import drill_block_name

    return drill_block_name()


def new_folder(scenario: str) -> Path:
    """``$RUNBOOK_HOME/drills/<UTC time>-<scenario>`` (created)."""
    home = Path(os.environ.get("RUNBOOK_HOME") or Path.home() / ".runbook")
    folder = home / "drills" / f"{utcnow().strftime('%Y%m%dT%H%M%S')}-{scenario}"
    suffix = 1
    while folder.exists():
        suffix += 1
        folder = folder.with_name(f"{folder.name.split('~')[0]}~{suffix}")
    folder.mkdir(parents=True)
    return folder


def run_drill(settings: DrillSettings, console: Console) -> DrillReport:
    """Run one drill and return its report (its ``ok`` says whether the incident was handled).

    Raises:
        DrillError: the drill cannot run as asked; nothing was started.
        KeyboardInterrupt: Ctrl-C; everything started is stopped and the message says what is left.
    """
    check_scenario(settings.scenario)
    app_dsn = None
    if settings.scenario == "db-degradation":
        settings = settings.model_copy(
            update={
                "database_url": settings.database_url
                or os.environ.get("RUNBOOK_DRILL_DATABASE_URL")
                or DEFAULT_DATABASE_URL
            }
        )
        assert settings.database_url is not None
        app_dsn = prepare_database(settings.database_url)
    folder = new_folder(settings.scenario)
    home = os.environ.get("RUNBOOK_HOME")
    os.environ["RUNBOOK_HOME"] = str(folder)  # the RCA and anything else the flows write
    try:
        return _run(settings, folder, console, app_dsn)
    finally:
        if home is None:
            os.environ.pop("RUNBOOK_HOME", None)
        else:
            os.environ["RUNBOOK_HOME"] = home


def _run(
    settings: DrillSettings, folder: Path, console: Console, app_dsn: str | None
) -> DrillReport:
    default = resources.files("runbook").joinpath("default_policy.toml").read_text("utf-8")
    actions = tomllib.loads(default).get("actions", {})
    (folder / "policy.toml").write_text(drill_policy_text(actions), encoding="utf-8")
    run = DrillRun(
        settings=settings,
        folder=folder,
        ledger_url=f"sqlite:///{folder / 'ledger.db'}",
        console=console,
    )
    console.print(
        f"[bold]drill[/] {settings.scenario} at {settings.speed:g}x"
        + (" (dry run: plans only)" if settings.dry_run else "")
        + (f", vendor faults {settings.faults:.0%}" if settings.faults else "")
        + f"\n  folder: {folder}"
    )
    from runbook.drill.prefect_api import prefect_api
    from runbook.drill.world import SimulatedProduction
    from runbook.sandbox.core import FaultRule

    prod = SimulatedProduction.start(
        seed=settings.seed, database_url=app_dsn, credentials=settings.credentials
    )
    interrupted = False
    try:
        if settings.faults:
            for vendor in SANDBOX_VENDORS_WITH_FAULTS:
                prod.world.add_fault(FaultRule(vendor=vendor, kind="error", rate=settings.faults))
        from prefect.settings import PREFECT_API_URL

        run.private_server = not PREFECT_API_URL.value()
        run.say("starting the Prefect API (a private server unless PREFECT_API_URL is set)")
        with prefect_api(folder.parent) as api_url:
            run.say(f"Prefect API {api_url}; simulated production {prod.url}")
            report = asyncio.run(_drill(run, prod))
    except KeyboardInterrupt:
        interrupted = True
        raise
    finally:
        prod.stop()
        if interrupted:  # said last, once everything has stopped
            _interrupted(run)
    return report


def _interrupted(run: DrillRun) -> None:
    where = f"INC-{run.incident_id}" if run.incident_id else "no incident had opened yet"
    run.console.print(
        f"\n[yellow]drill interrupted[/]: {where}. The simulated production and the gateway are "
        "stopped; the ledger holds every step that finished (each in its own transaction).\n"
        f"  inspect: runbook incidents --ledger sqlite:///{run.folder / 'ledger.db'}\n"
        f"  clean up: rm -rf {run.folder}\n"
        "  run again: runbook drill --scenario " + run.settings.scenario
    )
