"""``runbook db``: the database playbook's diagnosis and mitigation, for one-off use from a shell.

The same client and playbook functions as the incident flow. The JSON lists each backend found and
what was done to it (pid, role, application, query age, action, result, reason). A bad DSN, an
unreachable server or a missing privilege ends with exit code 1 and one sentence.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from runbook.clients.postgres import APPLICATION_NAME, PostgresClient
from runbook.errors import RunbookError
from runbook.playbooks.db import plan_mitigation, report

app = typer.Typer(
    help="Diagnose and mitigate a degraded PostgreSQL database.", no_args_is_help=True
)

DsnOpt = Annotated[
    str | None, typer.Option("--dsn", help="libpq DSN or postgresql:// URL of the bot role.")
]
TargetOpt = Annotated[
    str | None, typer.Option("--target", help="Name of a saved PostgresTarget block.")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]
OlderOpt = Annotated[
    str | None,
    typer.Option(
        "--older-than", help="Long-running threshold: 90, 90s, 5m or 1h (default: the target's)."
    ),
]


def parse_duration(text: str) -> float:
    """Seconds in ``text`` ("300", "30s", "5m", "1h").

    Raises:
        typer.BadParameter: not a positive duration.
    """
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", text)
    if not m or float(m.group(1)) <= 0:
        raise typer.BadParameter(f"{text!r} is not a duration such as 90s, 5m or 1h")
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[m.group(2)]


def _target(dsn: str | None, target: str | None) -> Any:
    """A PostgresTarget from ``--dsn`` (with the block's default protections) or ``--target``."""
    from blocks.postgres import PostgresTarget  # the block layer sits above runbook/

    if bool(dsn) == bool(target):
        raise typer.BadParameter("give exactly one of --dsn or --target")
    if target:
        try:
            return PostgresTarget.load(target)
        except ValueError as exc:
            raise RunbookError(f"no PostgresTarget block named {target!r}: {exc}") from exc
    try:
        return PostgresTarget(dsn=dsn)
    except ValidationError as exc:
        reason = str(exc.errors()[0].get("msg", "invalid DSN")).removeprefix("Value error, ")
        raise RunbookError(f"bad --dsn: {reason}") from None


def _client(t: Any) -> PostgresClient:
    return PostgresClient(
        t.dsn.get_secret_value(),
        application_name=APPLICATION_NAME,
        statement_timeout_s=t.statement_timeout_s,
        connect_timeout_s=t.connect_timeout_s,
    )


async def _run(
    t: Any, threshold_s: float, *, mitigate: bool, dry_run: bool, reload: bool
) -> dict[str, Any]:
    client = _client(t)
    diagnosis = await client.diagnose(threshold_s)
    plan = plan_mitigation(
        diagnosis,
        threshold_s=threshold_s,
        protected_roles=t.protected_roles,
        protected_application_names=t.protected_application_names,
    )
    if not mitigate:
        out = report(diagnosis, plan, dry_run=True)
        out["mode"] = "diagnose"
        return out
    results, vacuumed, reloaded = [], [], None
    if not dry_run:
        results = await client.cancel_and_terminate(plan.pids, started=plan.started)
        vacuumed = await client.vacuum_analyze(plan.vacuum_tables)
        if reload:
            reloaded = await client.reload_conf()
    out = report(diagnosis, plan, results, vacuumed, dry_run=dry_run)
    out["mode"] = "mitigate"
    out["reloaded"] = reloaded
    return out


def _print(out: dict[str, Any], as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(out, indent=2, default=str))
        return
    c = out["connections"]
    typer.echo(
        f"{out['database']} as {out['role']}: {c['used']}/{c['limit']} connections ({c['pct']}%)"
    )
    for b in out["backends"]:
        typer.echo(
            f"  pid {b['pid']} {b['role']}/{b['application'] or '-'} {b['state']} "
            f"{b['query_age_s']}s: {b['action']} -> {b['result']} ({b['reason']})"
        )
    for tbl in out["tables"]:
        typer.echo(f"  table {tbl['table']}: {tbl['reason']} -> {tbl.get('result')}")
    for h in out["index_hints"]:
        typer.echo(f"  index hint {h['table']}: {h['reason']}\n    {h['statement']}")
    for n in out["notes"]:
        typer.echo(f"  note: {n}")


def _main(
    dsn: str | None,
    target: str | None,
    older: str | None,
    *,
    mitigate: bool,
    dry_run: bool,
    as_json: bool,
    reload: bool = False,
) -> None:
    try:
        t = _target(dsn, target)
        threshold = parse_duration(older) if older else float(t.long_query_threshold_s)
        out = asyncio.run(_run(t, threshold, mitigate=mitigate, dry_run=dry_run, reload=reload))
    except RunbookError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    _print(out, as_json)


@app.command()
def diagnose(
    dsn: DsnOpt = None,
    target: TargetOpt = None,
    older_than: OlderOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Long-running and idle-in-transaction backends, blockers, connections, bloat, index hints."""
    _main(dsn, target, older_than, mitigate=False, dry_run=True, as_json=json_)


@app.command()
def mitigate(
    dsn: DsnOpt = None,
    target: TargetOpt = None,
    older_than: OlderOpt = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Plan only: say what would be done, change nothing.")
    ] = False,
    reload_conf: Annotated[
        bool, typer.Option("--reload-conf", help="Also run pg_reload_conf().")
    ] = False,
    json_: JsonOpt = False,
) -> None:
    """Cancel, then terminate, backends past the threshold (never protected ones); VACUUM ANALYZE
    bloated tables."""
    _main(
        dsn, target, older_than, mitigate=True, dry_run=dry_run, as_json=json_, reload=reload_conf
    )
