"""Phase 4, Root Cause Analysis (1-4 h): timeline from the ledger and the RCA document."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from prefect import flow

from flows.report import PhaseReport, publish
from flows.runtime import Options, build_runtime
from runbook.models import Phase
from runbook.rca import render_rca


def rca_dir() -> Path:
    home = Path(os.environ.get("RUNBOOK_HOME") or Path.home() / ".runbook")
    return home / "rca"


@flow(name="rca", flow_run_name="INC-{incident_id} rca")
async def rca(incident_id: int, options: Options | None = None) -> PhaseReport:
    """Root Cause Analysis: render the runbook's RCA template from the ledger, publish it as an
    artifact and write it to ``$RUNBOOK_HOME/rca/INC-<id>.md``.

    Args:
        incident_id: the ledger's incident id.
        options: policy, ledger and block names.
    """
    options = options or Options()
    rt = await build_runtime(options)
    led = rt.ledger
    inc, timeline, actions, items = await asyncio.gather(
        asyncio.to_thread(led.get_incident, incident_id),
        asyncio.to_thread(led.timeline, incident_id),
        asyncio.to_thread(led.actions_for, incident_id),
        asyncio.to_thread(led.action_items, incident_id),
    )
    report = PhaseReport(
        incident_id=incident_id,
        phase=Phase.RCA,
        started_at=rt.now(),
        deadline=rt.deadline(Phase.RCA, inc),
    )
    text = render_rca(inc, timeline, actions, items, rt.now())
    path = rca_dir() / f"INC-{incident_id}.md"
    await asyncio.to_thread(path.parent.mkdir, parents=True, exist_ok=True)
    await asyncio.to_thread(path.write_text, text, encoding="utf-8")
    report.done.append(f"RCA written to {path}")
    report.data["rca_path"] = str(path)
    await rt.note(incident_id, "rca", f"RCA document written to {path}", phase=Phase.RCA)
    report.ended_at = rt.now()
    await publish(report)
    from prefect.artifacts import acreate_markdown_artifact

    await acreate_markdown_artifact(
        markdown=text, key=f"inc-{incident_id}-rca-document", description=f"INC-{incident_id} RCA"
    )
    return report
