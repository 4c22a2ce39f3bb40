"""What a person sees of a phase: a markdown artifact (checked, found, done, time against its SLA)."""

from __future__ import annotations

from contextvars import ContextVar
from datetime import datetime
from typing import Any

from prefect.artifacts import Artifact, MarkdownArtifact
from prefect.context import FlowRunContext
from pydantic import BaseModel, Field

from runbook.models import Phase


class PhaseReport(BaseModel):
    """The outcome of one phase, returned by its flow and rendered as its artifact."""

    incident_id: int
    phase: Phase
    started_at: datetime
    ended_at: datetime | None = None
    deadline: datetime | None = None
    checked: list[str] = Field(default_factory=list)
    found: list[str] = Field(default_factory=list)
    done: list[str] = Field(default_factory=list)
    skipped: list[str] = Field(default_factory=list)
    data: dict[str, Any] = Field(default_factory=dict)

    @property
    def duration_s(self) -> float | None:
        return (self.ended_at - self.started_at).total_seconds() if self.ended_at else None

    @property
    def breached(self) -> bool:
        return bool(self.deadline and self.ended_at and self.ended_at > self.deadline)

    def markdown(self) -> str:
        title = f"# INC-{self.incident_id} {self.phase.value}\n"
        sla = "no deadline (ongoing)"
        if self.deadline:
            verdict = "**missed**" if self.breached else "met"
            sla = f"deadline {self.deadline:%H:%M:%S} UTC, {verdict}"
        lines = [title, f"Took {self.duration_s or 0:.1f} s; {sla}.\n"]
        for heading, items in (
            ("Checked", self.checked),
            ("Found", self.found),
            ("Done", self.done),
            ("Skipped", self.skipped),
        ):
            if items:
                lines.append(f"## {heading}\n")
                lines += [f"- {item}" for item in items]
                lines.append("")
        return "\n".join(lines)


#: set by ``flows.phase_runs`` while it runs a phase: ``publish`` leaves the phase's artifact there,
#: linked to the phase's run but not created yet; ``PhaseRuns`` creates it while the next phase waits
#: on its vendors. Created at the end of the phase, it competed at the server with Prefect recording
#: the run Completed (one after the other: 35-60 ms; side by side, Completed still took 26-44 ms)
unpublished: ContextVar[list[Artifact] | None] = ContextVar("unpublished", default=None)


async def publish(report: PhaseReport) -> None:
    """Publish the report as the phase's markdown artifact (key ``inc-42-triage``), linked to the
    phase's run; created here unless the phase's caller collects it (``unpublished``)."""
    run = FlowRunContext.get()
    artifact = MarkdownArtifact(
        markdown=report.markdown(),
        key=f"inc-{report.incident_id}-{report.phase.value}",
        description=f"INC-{report.incident_id} {report.phase.value}",
        flow_run_id=run.flow_run.id if run is not None and run.flow_run is not None else None,
    )
    later = unpublished.get()
    if later is None:
        await artifact.acreate()
    else:
        later.append(artifact)
