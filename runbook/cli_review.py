"""``runbook review`` (tick post-incident review items off, see what is open) and ``runbook report``.

Registered on the main app by ``runbook.cli`` (``register(app)``).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from datetime import timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from runbook.errors import LedgerError, PolicyError


class ReportFormat(StrEnum):
    TABLE = "table"
    JSON = "json"
    MARKDOWN = "markdown"


def review(
    ref: Annotated[str, typer.Argument(help="Incident id: 42 or INC-42.")],
    done: Annotated[
        list[str] | None,
        typer.Option(
            "--done",
            help="A checklist item to tick off (repeatable): postmortem, rca_drafted ... "
            "or review.item (48h.postmortem).",
        ),
    ] = None,
    by: Annotated[str, typer.Option("--by", help="Who did it (default: $USER).")] = "",
    policy: Annotated[
        Path | None, typer.Option("--policy", help="Policy file; else $RUNBOOK_POLICY.")
    ] = None,
    ledger: Annotated[
        str | None, typer.Option("--ledger", help="Ledger URL; else $RUNBOOK_LEDGER_URL.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Tick post-incident review items off (--done), and show each review's checklist and runs.

    When every item of every review is done and no action item is open, the review runs still
    scheduled in Prefect are cancelled.
    """
    from runbook.cli import _open_ledger, fail, out
    from runbook.models import parse_incident_ref
    from runbook.policy import load_policy
    from runbook.reviews import UnknownReviewItem, resolve_done

    try:
        incident_id = parse_incident_ref(ref)
        pol = load_policy(policy)
        pairs = resolve_done(pol, done or [])
    except UnknownReviewItem as exc:
        raise fail(str(exc), 2) from None
    except (ValueError, PolicyError) as exc:
        raise fail(str(exc), 2) from None
    who = by or os.environ.get("USER") or "cli"
    with _open_ledger(ledger) as led:
        try:
            inc = led.get_incident(incident_id)
            if pairs:
                led.tick_review_items(incident_id, pairs, who)
                ticked = ", ".join(f"{r}.{i}" for r, i in pairs)
                led.add_event(
                    incident_id,
                    "review_items_done",
                    f"review items done: {ticked} (by {who})",
                    actor=who,
                    data={"items": [f"{r}.{i}" for r, i in pairs]},
                )
            done_items = led.review_items_done(incident_id)
            runs = led.review_runs(incident_id)
            open_action_items = led.action_items(incident_id, open_only=True)
        except LedgerError as exc:
            raise fail(str(exc)) from None
        cancelled, cancel_note = _cancel_if_complete(led, pol, incident_id, done_items, pairs)
        if cancelled:
            runs = led.review_runs(incident_id)
    by_pair = {(d.review_key, d.item_key): d for d in done_items}
    data: dict[str, Any] = {
        "incident": inc.key,
        "reviews": [
            {
                "review": r.key,
                "items": [
                    {
                        "key": i.key,
                        "title": i.title,
                        "done": (r.key, i.key) in by_pair,
                        "done_by": by_pair[(r.key, i.key)].done_by
                        if (r.key, i.key) in by_pair
                        else None,
                    }
                    for i in r.checklist
                ],
            }
            for r in pol.reviews
        ],
        "runs": [r.model_dump(mode="json") for r in runs],
        "open_action_items": len(open_action_items),
        "cancelled": cancelled,
    }
    if as_json:
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
        return
    table = Table(title=f"{inc.key} {inc.title}: post-incident review")
    for col in ("review", "item", "", "done by", "run"):
        table.add_column(col)
    run_of = {r.review_key: r for r in runs}
    for rv in data["reviews"]:
        run = run_of.get(rv["review"])
        when = f"{run.state}, {run.scheduled_for:%Y-%m-%d %H:%M} UTC" if run else "not scheduled"
        for n, item in enumerate(rv["items"]):
            table.add_row(
                rv["review"] if n == 0 else "",
                item["key"],
                "[green]done[/]" if item["done"] else "open",
                item["done_by"] or "",
                when if n == 0 else "",
            )
    out.print(table)
    out.print(f"open action items: {len(open_action_items)}")
    if cancel_note:
        out.print(cancel_note)


def _cancel_if_complete(
    led: Any, pol: Any, incident_id: int, done_items: Any, pairs: Any
) -> tuple[list[str], str]:
    """Cancel the remaining review runs once everything is done (only after a tick)."""
    from runbook.ledger.reviews import done_pairs
    from runbook.reviews import all_items_done

    if not pairs or not all_items_done(pol, done_pairs(done_items)):
        return [], ""
    if led.action_items(incident_id, open_only=True):
        return [], "every review item is done; the reminders go on while action items are open"
    if not any(r.state == "scheduled" and r.flow_run_id for r in led.review_runs(incident_id)):
        return [], "every review item is done"
    from flows.reviews import cancel_review_runs

    try:
        cancelled = asyncio.run(cancel_review_runs(led, incident_id))
    except Exception as exc:  # noqa: BLE001 - the ticks are saved; the runs will send nothing
        return [], (
            f"every review item is done, but the remaining review runs could not be cancelled "
            f"({type(exc).__name__}: {exc}); they will send nothing when they run"
        )
    return cancelled, (
        "every review item is done: cancelled the review runs " + ", ".join(cancelled)
        if cancelled
        else "every review item is done"
    )


def report(
    since: Annotated[
        str, typer.Option("--since", help="How far back: 30d, 12h, 2w ... (detection time).")
    ] = "30d",
    fmt: Annotated[
        ReportFormat, typer.Option("--format", help="table, json or markdown.")
    ] = ReportFormat.TABLE,
    ledger: Annotated[
        str | None, typer.Option("--ledger", help="Ledger URL; else $RUNBOOK_LEDGER_URL.")
    ] = None,
) -> None:
    """MTTA, MTTM, MTTR, SLA attainment per severity and phase, incidents per scenario, and the
    action items open and overdue, over the incidents detected since --since."""
    from runbook.cli import _open_ledger, fail, out
    from runbook.clock import utcnow
    from runbook.stats import (
        HEADERS,
        attainment_rows,
        collect,
        human,
        parse_since,
        render_markdown,
        summarize,
    )

    try:
        window: timedelta = parse_since(since)
    except ValueError as exc:
        raise fail(f"--since: {exc}", 2) from None
    now = utcnow()
    with _open_ledger(ledger) as led:
        try:
            facts, items = collect(led, now - window, now)
        except LedgerError as exc:
            raise fail(str(exc)) from None
    summary = summarize(facts, items, now - window, now)
    if fmt is ReportFormat.JSON:
        sys.stdout.write(json.dumps(summary.as_json(), indent=2) + "\n")
        return
    if fmt is ReportFormat.MARKDOWN:
        sys.stdout.write(render_markdown(summary, title=f"Incident report, last {since}"))
        return
    out.print(
        f"last {since}: {summary.incidents} incident(s), {summary.open_incidents} open; "
        f"MTTA {human(summary.mtta_s)}, MTTM {human(summary.mttm_s)}, MTTR {human(summary.mttr_s)}"
    )
    table = Table(title="per severity (SLA met/decided per phase)")
    for h in HEADERS:
        table.add_column(h)
    for row in attainment_rows(summary):
        table.add_row(*row)
    out.print(table)
    scenarios = ", ".join(f"{k} {v}" for k, v in summary.by_scenario.items()) or "none"
    out.print(f"incidents per scenario: {scenarios}")
    out.print(f"SLA misses: {len(summary.sla_misses)}")
    out.print(
        f"action items: {summary.action_items_open} open, {summary.action_items_overdue} overdue"
    )
    for i in summary.overdue_items:
        due = f"{i.due_at:%Y-%m-%d}" if i.due_at else "-"
        out.print(f"  overdue: INC-{i.incident_id} #{i.id} {i.title} (owner {i.owner}, due {due})")


def register(app: typer.Typer) -> None:
    """Add ``review`` and ``report`` to the ``runbook`` command."""
    app.command("review")(review)
    app.command("report")(report)
