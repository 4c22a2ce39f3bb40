"""The ``runbook`` command.

Built on Typer (it ships with Prefect, gives typed options, ``--help`` everywhere and exit code 2 for
usage errors) and Rich tables for people; every listing has ``--json`` for machines.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Annotated, Any, cast

import typer
from rich.console import Console

from runbook.cli_review import register as register_review
from runbook.errors import ConfigError, LedgerError, PolicyError

app = typer.Typer(
    name="runbook",
    help="Runbook-as-code for production incidents on Prefect.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
policy_app = typer.Typer(help="Show or check the incident-response policy.", no_args_is_help=True)
incident_app = typer.Typer(help="Look at one incident.", no_args_is_help=True)
bench_app = typer.Typer(
    help="Benchmarks; each prints one JSON object with --json.", no_args_is_help=True
)
app.add_typer(policy_app, name="policy")
app.add_typer(incident_app, name="incident")
app.add_typer(bench_app, name="bench")


def _mount_db() -> None:
    from runbook.cli_db import app as db_app

    app.add_typer(db_app, name="db", help="Diagnose and mitigate a PostgreSQL database directly.")


_mount_db()
register_review(app)

out = Console()
err = Console(stderr=True)

PolicyOpt = Annotated[
    Path | None,
    typer.Option(
        "--policy", help="Policy file (TOML or YAML) over the defaults; else $RUNBOOK_POLICY."
    ),
]
LedgerOpt = Annotated[
    str | None,
    typer.Option(
        "--ledger", help="Ledger URL; else $RUNBOOK_LEDGER_URL, else SQLite in $RUNBOOK_HOME."
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print one clear line on stderr and return the Exit to raise."""
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


# --- policy ---------------------------------------------------------------------------------------


@policy_app.command("show")
def policy_show(policy: PolicyOpt = None, as_json: JsonOpt = False) -> None:
    """Print the active policy: severities, phase windows, thresholds, routing, escalation, reviews."""
    from runbook.policy import load_policy
    from runbook.render import policy_tables

    try:
        pol = load_policy(policy)
    except PolicyError as exc:
        raise fail(str(exc), 2) from None
    if as_json:
        _print_json(pol.model_dump(mode="json"))
        return
    for table in policy_tables(pol):
        out.print(table)


@policy_app.command("check")
def policy_check(
    path: Annotated[Path, typer.Argument(help="The policy file to validate.")],
) -> None:
    """Validate a policy file; exit 2 naming the first wrong field."""
    from runbook.policy import load_policy

    try:
        load_policy(path)
    except PolicyError as exc:
        raise fail(str(exc), 2) from None
    out.print(f"{path}: valid")


# --- sandbox --------------------------------------------------------------------------------------


@app.command()
def sandbox(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8900,
    scenario: Annotated[
        str | None, typer.Option(help="A named fault scenario to inject at start.")
    ] = None,
    seed: Annotated[
        int | None, typer.Option(help="Seed for repeatable faults and traffic.")
    ] = None,
    token: Annotated[
        str, typer.Option(help="The credential every simulated vendor accepts.")
    ] = "sandbox-token",
    database_url: Annotated[
        str | None, typer.Option(help="A real PostgreSQL for the db-degradation scenario.")
    ] = None,
) -> None:
    """Run the simulated production world (Vercel, Supabase, Slack, ... and the app) over HTTP."""
    import uvicorn

    from runbook.sandbox.app import create_app
    from runbook.sandbox.scenarios import SCENARIOS

    if scenario and scenario not in SCENARIOS:
        raise fail(f"unknown scenario {scenario!r}; known: {', '.join(SCENARIOS)}", 2)
    asgi = create_app(token=token, seed=seed, scenario=scenario, database_url=database_url)
    err.print(
        f"sandbox world on http://{host}:{port} (vendors under /<vendor>, control under /_sandbox)"
    )
    uvicorn.run(asgi, host=host, port=port, log_level="warning")


# --- incidents ------------------------------------------------------------------------------------


def _open_ledger(url: str | None):  # type: ignore[no-untyped-def]
    from runbook.ledger import open_ledger

    try:
        return open_ledger(url)
    except LedgerError as exc:
        raise fail(str(exc)) from None


@app.command()
def incidents(
    open_only: Annotated[bool, typer.Option("--open", help="Only incidents still open.")] = False,
    limit: Annotated[int, typer.Option(help="At most this many, newest first.")] = 50,
    ledger: LedgerOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List incidents from the ledger, newest first."""
    from runbook.render import incidents_table

    with _open_ledger(ledger) as led:
        try:
            rows = led.list_incidents(open_only=open_only, limit=limit)
        except LedgerError as exc:
            raise fail(str(exc)) from None
    if as_json:
        _print_json([r.model_dump(mode="json") | {"key": r.key} for r in rows])
        return
    if not rows:
        out.print("no incidents" + (" open" if open_only else ""))
        return
    out.print(incidents_table(rows))


@incident_app.command("show")
def incident_show(
    ref: Annotated[str, typer.Argument(help="Incident id: 42 or INC-42.")],
    ledger: LedgerOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show one incident with its alerts, timeline, actions and action items."""
    from runbook.models import parse_incident_ref
    from runbook.render import incident_detail

    try:
        incident_id = parse_incident_ref(ref)
    except ValueError as exc:
        raise fail(str(exc), 2) from None
    with _open_ledger(ledger) as led:
        try:
            inc = led.get_incident(incident_id)
            alerts = led.alerts_for(incident_id)
            events = led.timeline(incident_id)
            actions = led.actions_for(incident_id)
            items = led.action_items(incident_id)
        except LedgerError as exc:
            raise fail(str(exc)) from None
    if as_json:
        _print_json(
            {
                "incident": inc.model_dump(mode="json") | {"key": inc.key},
                "alerts": [a.model_dump(mode="json", exclude={"raw_body"}) for a in alerts],
                "timeline": [e.model_dump(mode="json") for e in events],
                "actions": [a.model_dump(mode="json") for a in actions],
                "action_items": [i.model_dump(mode="json") for i in items],
            }
        )
        return
    for renderable in incident_detail(inc, alerts, events, actions, items):
        out.print(renderable)


# --- serving and benchmarks -------------------------------------------------------------------------


def _heartbeats() -> None:
    """Runs started here send heartbeats every 30 s (unless the environment sets a frequency), and
    the server has the automation that marks a run Crashed when they stop (``flows.recovery``)."""
    from flows.recovery import prepare_heartbeats

    try:
        said = prepare_heartbeats()
    except ValueError as exc:
        raise fail(str(exc), 2) from None
    err.print(
        said,
        style="yellow" if said.startswith("warning") else "dim",
        highlight=False,
        soft_wrap=True,
    )


def _check_run_settings(worker: bool = False) -> None:
    """Settings the runs (and, with ``worker``, `runbook worker`'s Prefect worker) read from this
    process's environment: refused before anything starts."""
    from runbook.priority import after_mitigation_nice, run_nice

    try:
        after_mitigation_nice()
        if worker:
            from flows.cancel_watch import shared_watch_wanted

            shared_watch_wanted()
            run_nice()
    except ConfigError as exc:
        raise fail(str(exc), 2) from None


@app.command()
def serve(
    limit: Annotated[int | None, typer.Option(help="At most this many runs at once.")] = None,
    poll: Annotated[
        float, typer.Option(help="Seconds between polls for launched runs (e.g. 0.2).")
    ] = 1.0,
) -> None:
    """Serve every runbook deployment from this process (no work pool needed) until Ctrl-C."""
    from flows.serve import main as serve_main

    if poll <= 0:
        raise fail(f"--poll must be a positive number of seconds, not {poll}", 2)
    _check_run_settings()
    _heartbeats()
    try:
        serve_main(limit=limit, poll_seconds=poll)
    except RuntimeError as exc:  # the Prefect API cannot be reached: say so in one line
        raise fail(str(exc)) from None


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
)
def worker(
    ctx: typer.Context,
    pool: Annotated[str, typer.Option(help="The process work pool to poll.")] = "runbook",
    limit: Annotated[
        int | None, typer.Option(help="At most this many flow runs at once (Prefect's --limit).")
    ] = None,
) -> None:
    """A Prefect process worker whose runs are forked from a preloaded server.

    Runs `prefect worker start --pool POOL --type process` (further options
    go to it) next to a fork server that has imported prefect and the flows
    once, until Ctrl-C. Deployments whose job variable `command` is
    `python -m runbook.forkrun` then start each run as a fork (~50 ms)
    instead of new interpreters importing everything (~6 s of CPU here);
    other deployments run as Prefect runs them.
    """
    from flows.worker import main as worker_main

    if limit is not None and limit < 1:
        raise fail(f"--limit must be at least 1, not {limit}", 2)
    _check_run_settings(worker=True)
    _heartbeats()
    try:
        code = worker_main(pool, limit, list(ctx.args))
    except RuntimeError as exc:
        raise fail(str(exc)) from None
    raise typer.Exit(code)


@app.command()
def gateway(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8080,
    insecure_no_auth: Annotated[
        bool,
        typer.Option(
            "--insecure-no-auth", help="Accept unauthenticated alerts (local drills only)."
        ),
    ] = False,
    no_prefect: Annotated[
        bool,
        typer.Option("--no-prefect", help="Store alerts and incidents but launch no flow runs."),
    ] = False,
    ledger: LedgerOpt = None,
    secrets_block: Annotated[
        str | None,
        typer.Option(
            help="A GatewaySecrets block's name; the environment fills what it leaves unset."
        ),
    ] = None,
    tls_cert: Annotated[
        Path | None,
        typer.Option(help="Serve HTTPS: the PEM certificate chain (with --tls-key)."),
    ] = None,
    tls_key: Annotated[
        Path | None,
        typer.Option(help="The certificate's PEM private key (unencrypted; keep it 0600)."),
    ] = None,
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            help="Gateway processes sharing the port (2 on a 2-core machine with a PostgreSQL "
            "ledger; 1 for SQLite).",
        ),
    ] = 1,
) -> None:
    """Receive alerts (Alertmanager, Grafana, PagerDuty, Datadog, Sentry, generic JSON) and launch
    one incident-response run per problem."""
    from runbook.gateway.server import run as run_gateway

    config = None
    if secrets_block:
        from blocks.gateway import GatewaySecrets  # the block layer sits above runbook/

        try:
            block = cast(GatewaySecrets, GatewaySecrets.load(secrets_block))  # sync in a CLI
            config = block.gateway_config()
        except ValueError as exc:  # Prefect: no such block document
            raise fail(f"cannot load the GatewaySecrets block {secrets_block!r}: {exc}") from None
    try:
        run_gateway(
            host, port, insecure_no_auth, ledger, not no_prefect, config, tls_cert, tls_key,
            workers,
        )  # fmt: skip
    except (ConfigError, LedgerError) as exc:
        raise fail(str(exc)) from None


@bench_app.command("ingest")
def bench_ingest(
    alerts: Annotated[int, typer.Option(help="Alerts to send.")] = 50000,
    groups: Annotated[int, typer.Option(help="Distinct problems they belong to.")] = 500,
    ledger: Annotated[str, typer.Option(help="sqlite or postgres.")] = "sqlite",
    vs_alertmanager: Annotated[
        bool,
        typer.Option("--vs-alertmanager", help="Send the same load to a local Alertmanager too."),
    ] = False,
    as_json: JsonOpt = False,
    connections: Annotated[
        int, typer.Option(help="Concurrent connections, one request in flight each (2-1000).")
    ] = 128,  # ingest_load.DEFAULT_CONNECTIONS (not imported: the CLI loads bench code lazily)
    workers: Annotated[
        int | None,
        typer.Option(help="Gateway processes (default: 2 on postgres, 1 on sqlite)."),
    ] = None,
) -> None:
    """Drive the gateway over HTTP; throughput, ack latency, incidents and alerts counted in the ledger."""
    from runbook.bench.ingest import main as bench_main

    if ledger not in ("sqlite", "postgres"):
        raise fail(f"--ledger must be sqlite or postgres, not {ledger!r}", 2)
    raise typer.Exit(
        bench_main(alerts, groups, ledger, as_json, vs_alertmanager, connections, workers)
    )


@bench_app.command("mitigate-db")
def bench_mitigate_db(
    backends: Annotated[int, typer.Option(help="How many long-running sessions to open.")] = 200,
    as_json: JsonOpt = False,
) -> None:
    """Diagnose and terminate N long-running backends on the local PostgreSQL; time it end to end."""
    from runbook.bench.mitigate_db import main as bench_main

    raise typer.Exit(bench_main(backends=backends, json_out=as_json))


@bench_app.command("latency")
def bench_latency(
    alerts: Annotated[int, typer.Option(help="Alerts to send, one after another.")] = 50,
    poll: Annotated[float, typer.Option(help="`runbook serve --poll` of the served runner.")] = 0.2,
    as_json: JsonOpt = False,
) -> None:
    """Alert POST to the first task of `detect` running, with the deployments served by `runbook
    serve` on a private Prefect server; p50/p95 over the alerts."""
    from runbook.bench.latency import main as bench_main

    if alerts < 1 or poll <= 0:
        raise fail("--alerts must be at least 1 and --poll a positive number of seconds", 2)
    raise typer.Exit(bench_main(alerts, poll, as_json))


@bench_app.command("overhead")
def bench_overhead(
    latency: Annotated[
        float, typer.Option(help="Seconds added to every vendor answer of the sandbox.")
    ] = 0.2,
    runs: Annotated[
        int, typer.Option(help="Incidents to run; each phase's figure is their median.")
    ] = 3,
    as_json: JsonOpt = False,
) -> None:
    """The bad-deploy incident against a sandbox whose every call takes --latency: each phase's
    wall time over its critical path (policy waits excluded), the median over --runs incidents."""
    from runbook.bench.overhead import main as bench_main

    if not 0 < latency <= 5:
        raise fail("--latency must be within (0, 5] seconds", 2)
    if not 1 <= runs <= 20:
        raise fail("--runs must be within 1..20", 2)
    raise typer.Exit(bench_main(latency, as_json, runs))


@bench_app.command("scale")
def bench_scale(
    incidents: Annotated[int, typer.Option(help="Distinct incidents in the storm.")] = 100,
    workers: Annotated[int, typer.Option(help="Worker processes on the pool.")] = 2,
    speed: Annotated[
        float,
        typer.Option(
            help="Clock compression of the incidents; 1 is production timing (then give "
            "--limit enough slots for every incident at once)."
        ),
    ] = 100.0,
    limit: Annotated[int, typer.Option(help="Concurrent flow runs per worker (--limit).")] = 5,
    fork: Annotated[
        bool,
        typer.Option(
            help="Workers are `runbook worker` (runs forked from a preloaded server); "
            "--no-fork: plain `prefect worker start`."
        ),
    ] = True,
    redis: Annotated[
        str | None,
        typer.Option(
            help="Run the Prefect server as an API process and a services process with their "
            "messages through this Redis (prefect-redis), as in production, e.g. "
            "redis://127.0.0.1:6379/13 (that database and the next are emptied first); "
            "default: one server process."
        ),
    ] = None,
    server_prefect: Annotated[
        Path | None,
        typer.Option(
            help="The `prefect` executable the server's processes run, from another virtual "
            "environment with this Prefect release (e.g. on Python 3.13, where Prefect's "
            "datetimes are the standard library's, not pendulum's); default: this one's."
        ),
    ] = None,
    run_nice: Annotated[
        int,
        typer.Option(
            help="The niceness the workers' runs start at (RUNBOOK_RUN_NICE, 0-19), so that they "
            "yield the cores to the server, workers and databases they all wait on; 0: the "
            "server's priority."
        ),
    ] = 0,
    as_json: JsonOpt = False,
) -> None:
    """A storm of distinct incidents through the gateway to process workers on a `prefect server
    start` on PostgreSQL: all resolved, no side effect twice, p95 time to mitigate vs one alone."""
    from runbook.bench.scale import main as bench_main
    from runbook.bench.scale_cluster import redis_messaging_env, server_installation

    if incidents < 1 or workers < 1 or limit < 1 or not 0 < speed <= 10000:
        raise fail(
            "--incidents, --workers and --limit must be at least 1, --speed in (0, 10000]", 2
        )
    if not 0 <= run_nice <= 19:
        raise fail(f"--run-nice must be a whole number from 0 to 19, not {run_nice}", 2)
    if redis is not None:
        try:
            redis_messaging_env(redis)
        except ValueError as exc:
            raise fail(str(exc), 2) from None
        if importlib.util.find_spec("prefect_redis") is None:
            raise fail("--redis needs prefect-redis: pip install 'prefect-redis>=0.2.15,<0.3'", 2)
    if server_prefect is not None:
        try:
            server_installation(server_prefect, needs_redis=redis is not None)
        except ValueError as exc:
            raise fail(str(exc), 2) from None
    raise typer.Exit(
        bench_main(incidents, workers, speed, limit, as_json, fork, redis, server_prefect, run_nice)
    )


# --- drill ----------------------------------------------------------------------------------------


@app.command()
def drill(
    scenario: Annotated[
        str,
        typer.Option(
            "--scenario",
            help="bad-deploy | db-degradation | auth-failure | edge-timeouts | high-error-rate.",
        ),
    ] = "bad-deploy",
    speed: Annotated[
        float, typer.Option("--speed", help="Clock compression: 100 runs a 1 h SLA in 36 s.")
    ] = 100.0,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Plan every action, change nothing.")
    ] = False,
    faults: Annotated[
        float,
        typer.Option("--faults", help="Share of vendor calls that fail transiently (0-0.5)."),
    ] = 0.0,
    database_url: Annotated[
        str | None,
        typer.Option(
            "--database-url",
            help="PostgreSQL the database checks run against, and where db-degradation runs its "
            "slow query (for that scenario: else $RUNBOOK_DRILL_DATABASE_URL, else the local "
            "server on 127.0.0.1:5432).",
        ),
    ] = None,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Write the JSON report to this file.")
    ] = None,
    timeout: Annotated[
        float, typer.Option("--timeout", help="Give up after this many seconds.")
    ] = 600.0,
) -> None:
    """Inject a realistic incident into a simulated production and handle it end to end.

    Exits 0 only when the incident was mitigated and verified (a dry run: when every phase ran).
    """
    from pydantic import ValidationError

    from runbook.drill.report import summary_tables
    from runbook.drill.run import (
        DrillError,
        DrillSettings,
        check_scenario,
        quiet_prefect_console,
        run_drill,
    )

    quiet_prefect_console()  # before Prefect is imported: its logging setup reads it once

    try:
        check_scenario(scenario)
        settings = DrillSettings(
            scenario=scenario,
            speed=speed,
            dry_run=dry_run,
            faults=faults,
            database_url=database_url,
            json_path=json_path,
            timeout_s=timeout,
        )
    except DrillError as exc:
        raise fail(str(exc), code=2) from None
    except ValidationError as exc:
        first = exc.errors()[0]
        raise fail(f"--{first['loc'][0]}: {first['msg']}".replace("_", "-"), code=2) from None
    try:
        report = run_drill(settings, out)
    except DrillError as exc:
        raise fail(str(exc), code=2) from None
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    for table in summary_tables(report):
        out.print(table)
    out.print(f"RCA: {report.rca_path or '-'}\nchart: {report.chart_path or '-'}", soft_wrap=True)
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(report.model_dump_json(indent=2) + "\n", encoding="utf-8")
        out.print(f"JSON report: {json_path}")
    if not report.ok:
        raise fail(
            f"INC-{report.incident_id} was not mitigated and verified "
            f"(status {report.status}); see the timeline: runbook incident show "
            f"{report.incident_id} --ledger {report.ledger_url}"
        )


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
