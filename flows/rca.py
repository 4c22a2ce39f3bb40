"""Phase 4, Root Cause Analysis (1-4 h): timeline from the ledger, response times, prevention items,
a chart of the incident, and the RCA document (file, artifact, ticket comment)."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

from prefect import flow
from prefect.artifacts import acreate_markdown_artifact
from prefect.exceptions import MissingContextError
from prefect.logging import get_run_logger

from flows.common import attempt, ctx_for, lead_first, skip
from flows.report import PhaseReport, publish
from flows.runtime import Options, Runtime, build_runtime
from runbook.chart import MetricSeries, metric_series, trigger_metric, write_chart
from runbook.child_process import ChildProcessFailed, in_child
from runbook.models import Action, ActionStatus, Incident, Phase
from runbook.rca import CHART_ALT, new_items, prevention_items, render_rca
from runbook.thresholds import reading_values
from runbook.timings import Timings, incident_timings
from tasks.metrics import measure_metrics
from tasks.tickets import comment_ticket

READING_WINDOW_S = 30.0  # as the mitigation's verification: the metric now, after the incident


def rca_dir() -> Path:
    home = Path(os.environ.get("RUNBOOK_HOME") or Path.home() / ".runbook")
    return home / "rca"


async def add_prevention_items(rt: Runtime, inc: Incident, report: PhaseReport) -> None:
    """Store the diagnosis's prevention items that are not action items yet (a re-run adds none)."""
    led = rt.ledger
    timeline, actions, existing = await asyncio.gather(
        asyncio.to_thread(led.timeline, inc.id),
        asyncio.to_thread(led.actions_for, inc.id),
        asyncio.to_thread(led.action_items, inc.id),
    )
    proposed = prevention_items(inc, timeline, actions, rt.policy, rt.now())
    for item in new_items(proposed, existing):
        await asyncio.to_thread(
            led.add_action_item, inc.id, item.title, owner=item.owner, due_at=item.due, source="rca"
        )
        report.done.append(f"action item: {item.title} (owner {item.owner})")


async def read_metric(rt: Runtime, inc: Incident, metric: str, report: PhaseReport) -> None:
    """Measure the triggering metric now and record it on the timeline (the chart's last point)."""
    app = rt.systems.get("app")
    if app is None or not app.metrics_url:
        skip(rt, report, "app", f"{metric} reading for the chart")
        return
    window = max(0.3, READING_WINDOW_S / rt.speed)
    readings = await attempt(
        rt, report, "metric reading", measure_metrics(app, window), escalate_on_4xx=False
    )
    value = reading_values(readings).get(metric) if readings is not None else None
    if value is None:
        report.found.append(f"{metric}: no reading now (the window had no data)")
        return
    await rt.note(
        inc.id,
        "metric_reading",
        f"{metric} now {value:.3g}",
        phase=Phase.RCA,
        data={"metric": metric, "value": value},
    )


async def link_ticket(
    rt: Runtime, inc: Incident, path: Path, report: PhaseReport, actions: list[Action]
) -> None:
    """Comment the RCA's location on the incident ticket, if one was opened (once).

    ``actions`` are the incident's actions as the ledger holds them (the ticket's key is there).
    """
    tickets = next(
        (
            a.result
            for a in actions
            if a.kind == "create_ticket" and a.status is ActionStatus.APPLIED
        ),
        None,
    )
    if not tickets or not tickets.get("key"):
        return
    if rt.systems.tickets is None:
        skip(rt, report, "github", "RCA link on the ticket")
        return
    body = (
        f"Root cause analysis for {inc.key}: {path} "
        f"(Prefect artifact inc-{inc.id}-rca-document). Human sections are marked to be written."
    )
    out = await attempt(
        rt,
        report,
        "RCA link on the ticket",
        comment_ticket(ctx_for(rt, inc.id), rt.systems.tickets, str(tickets["key"]), "rca", body),
    )
    if out is not None:
        report.done.append(f"ticket {tickets['key']}: RCA linked ({out['status']})")


async def draw_chart(path: Path, timings: Timings, series: MetricSeries, title: str) -> Path:
    """The chart, drawn in a child process; a child that died (killed for memory, say) is said in
    the run's log and the chart is drawn here instead."""
    try:
        return await in_child(write_chart, path, timings, series, title)
    except ChildProcessFailed as exc:
        try:
            log: logging.Logger | logging.LoggerAdapter[logging.Logger] = get_run_logger()
        except MissingContextError:
            log = logging.getLogger(__name__)
        log.warning("%s; drawing the chart in this process", exc)
        return await asyncio.to_thread(write_chart, path, timings, series, title)


@flow(name="rca", flow_run_name="INC-{incident_id} rca")
async def rca(incident_id: int, options: Options | None = None) -> PhaseReport:
    """Root Cause Analysis: the timeline and response times from the ledger, prevention action items
    from the diagnosis, a chart of the phases and the triggering metric, and the runbook's RCA
    template filled in; written to ``$RUNBOOK_HOME/rca/INC-<id>.md`` (chart ``INC-<id>.png`` next to
    it), published as an artifact and linked from the ticket.

    Args:
        incident_id: the ledger's incident id.
        options: policy, ledger and block names.

    Returns:
        The phase report; ``data`` holds ``rca_path`` and ``chart_path``.
    """
    options = options or Options()
    rt = await build_runtime(options)
    led = rt.ledger
    inc, alerts = await asyncio.gather(
        asyncio.to_thread(led.get_incident, incident_id),
        asyncio.to_thread(led.alerts_for, incident_id),
    )
    report = PhaseReport(
        incident_id=incident_id,
        phase=Phase.RCA,
        started_at=rt.now(),
        deadline=rt.deadline(Phase.RCA, inc),
    )
    await asyncio.gather(
        add_prevention_items(rt, inc, report),
        read_metric(rt, inc, trigger_metric(inc, alerts), report),
    )
    # everything the document shows, read once after this phase's own records
    inc, timeline, actions, items, deadlines = await asyncio.gather(
        asyncio.to_thread(led.get_incident, incident_id),
        asyncio.to_thread(led.timeline, incident_id),
        asyncio.to_thread(led.actions_for, incident_id),
        asyncio.to_thread(led.action_items, incident_id),
        asyncio.to_thread(led.deadlines, incident_id),
    )
    timings = incident_timings(inc, timeline, deadlines)
    series = metric_series(inc, alerts, timeline, rt.policy)
    path = rca_dir() / f"INC-{incident_id}.md"
    chart = path.with_suffix(".png")
    text = render_rca(
        inc, timeline, actions, items, rt.now(),
        timings=timings, policy=rt.policy, speed=rt.speed, chart_name=chart.name,
    )  # fmt: skip
    await asyncio.to_thread(path.parent.mkdir, parents=True, exist_ok=True)
    await asyncio.to_thread(path.write_text, text, encoding="utf-8")
    report.done.append(f"RCA written to {path}")
    report.data.update(rca_path=str(path), chart_path=str(chart))

    # the ticket comment is the call on this phase's path: it leaves first (``lead_first``); the
    # chart, CPU work (0.1-0.3 s), is drawn in a child process on the other core meanwhile (in a
    # thread it took the interpreter from the event loop: 0.6 s, and the comment answered late),
    # beside the timeline entry and the document's artifact
    await lead_first(
        link_ticket(rt, inc, path, report, actions),
        draw_chart(chart, timings, series, f"{inc.key}: {inc.title}"),
        rt.note(
            incident_id,
            "rca",
            f"RCA document written to {path}",
            phase=Phase.RCA,
            data={"rca_path": str(path), "chart_path": str(chart), "events": len(timeline)},
        ),
        acreate_markdown_artifact(
            markdown=text.replace(f"![{CHART_ALT}]({chart.name})", f"Chart: `{chart}`"),
            key=f"inc-{incident_id}-rca-document",
            description=f"INC-{incident_id} RCA",
        ),
    )
    report.done.append(f"chart drawn at {chart}")
    report.ended_at = rt.now()
    await publish(report)
    return report
