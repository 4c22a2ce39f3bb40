"""The incident chart: one bar per phase against its SLA window, and the triggering metric's readings."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from matplotlib.colors import to_hex

import flows.rca as rca  # imports prefect, which sets logging up: before caplog's handler is added
from runbook.chart import (
    BREACHED,
    MET,
    NO_SERIES,
    build_figure,
    left_margin,
    metric_series,
    warm_up,
    write_chart,
)
from runbook.child_process import ChildProcessFailed
from runbook.ledger.records import Deadline
from runbook.models import Alert, Incident, IncidentStatus, Phase, Severity, TimelineEvent
from runbook.policy import load_policy
from runbook.timings import incident_timings

T0 = datetime(2026, 11, 26, 3, 0, tzinfo=UTC)


def _at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def _event(kind: str, minutes: float, phase: Phase | None = None, **data: object) -> TimelineEvent:
    return TimelineEvent(
        incident_id=1, at=_at(minutes), kind=kind, phase=phase, message=kind, data=data
    )


INC = Incident(
    id=1,
    dedup_key="k",
    title="errors",
    severity=Severity.P1,
    status=IncidentStatus.RESOLVED,
    detected_at=T0,
    mitigated_at=_at(30),
    resolved_at=_at(40),
    diagnosis={"findings": {"error_rate_pct": 4.2, "p95_ms": 900}},
)
TIMELINE = [
    _event("phase_started", 0, Phase.DETECT),
    _event("phase_ended", 3, Phase.DETECT),
    _event("phase_started", 3, Phase.TRIAGE),
    _event("diagnosis", 10, Phase.TRIAGE),
    _event("phase_ended", 20, Phase.TRIAGE),
    _event("phase_started", 20, Phase.MITIGATE),
    _event("phase_ended", 35, Phase.MITIGATE),
    _event("metric_reading", 45, Phase.RCA, metric="error_rate", value=0.2),
    _event("metric_reading", 46, Phase.RCA, metric="p95_latency", value=300),
]
DEADLINES = [
    Deadline(id=i, incident_id=1, phase=p, due_at=_at(m))
    for i, (p, m) in enumerate((("detect", 5), ("triage", 15), ("mitigate", 60), ("rca", 240)))
]
ALERT = Alert(
    source="alertmanager",
    delivery_id="d1",
    dedup_key="k",
    labels={"alertname": "HighErrorRate"},
    annotations={"metric": "error_rate", "value": "5.1"},
    started_at=_at(-1),
)


def test_series_holds_every_recorded_reading_of_the_triggering_metric() -> None:
    """The alert's value, triage's finding and the RCA's reading of the alert's metric, in time
    order, with its unit and alert threshold; other metrics' readings are left out."""
    s = metric_series(INC, [ALERT], TIMELINE, load_policy())
    assert (s.metric, s.unit, s.threshold) == ("error_rate", "%", 1.0)
    assert [(p.source, p.value) for p in s.points] == [
        ("alert", 5.1),
        ("triage", 4.2),
        ("reading", 0.2),
    ]
    # an alert without a metric annotation: its name says which metric
    named = ALERT.model_copy(update={"annotations": {}, "labels": {"alertname": "HighLatencyP95"}})
    latency = metric_series(INC, [named], TIMELINE, load_policy())
    assert latency.metric == "p95_latency" and [p.value for p in latency.points] == [900, 300]


def test_one_bar_per_phase_red_when_breached_and_the_file_is_a_png(tmp_path: Path) -> None:
    """Each phase with timings gets one duration bar and one SLA outline; the phase that ended past
    its deadline (triage) is red, the others green; the saved file is a PNG."""
    timings = incident_timings(INC, TIMELINE, DEADLINES)
    series = metric_series(INC, [ALERT], TIMELINE, load_policy())
    fig = build_figure(timings, series, "INC-1")
    ax = fig.axes[0]
    bars = next(c for c in ax.containers if c.get_label() == "phases")
    outlines = next(c for c in ax.containers if c.get_label() == "sla")
    assert len(bars) == len(outlines) == len(timings.phases) == 4
    colors = [to_hex(b.get_facecolor()) for b in bars]
    assert colors[:3] == [MET, BREACHED, MET]
    assert [round(b.get_width(), 3) for b in bars][:3] == [3.0, 17.0, 15.0]  # minutes
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert [label.split("\n")[0] for label in labels] == ["detect", "triage", "mitigate", "rca"]
    assert labels[3] == "rca\n(due +240 min)"  # a deadline past the axis is named
    assert len(fig.axes[1].lines[0].get_xdata()) == 3  # the metric's three readings

    path = write_chart(tmp_path / "rca" / "INC-1.png", timings, series, "INC-1")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_no_data_draws_panels_that_say_so(tmp_path: Path) -> None:
    """No timeline, deadlines or readings: the chart is still written, and says what is missing."""
    bare = INC.model_copy(update={"diagnosis": None, "resolved_at": None, "mitigated_at": None})
    timings = incident_timings(bare, [], [])
    series = metric_series(bare, [], [], load_policy())
    fig = build_figure(timings, series, "INC-1")
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert NO_SERIES in texts and "no phase timings recorded" in texts
    path = write_chart(tmp_path / "INC-1.svg", timings, series, "INC-1")
    assert path.read_text().lstrip().startswith("<?xml") and "<svg" in path.read_text()


def _inside_figure(fig: object) -> list[str]:
    """The texts of the figure (tick labels, titles, axis labels) whose drawn extent leaves it."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)  # type: ignore[arg-type]
    canvas.draw()
    renderer = canvas.get_renderer()
    width, height = canvas.get_width_height()
    out = []
    for ax in fig.axes:  # type: ignore[attr-defined]
        lo, hi = sorted(ax.get_xlim())
        drawn_x = [t for t in ax.get_xticklabels() if lo <= t.get_position()[0] <= hi]
        for t in [*ax.get_yticklabels(), *drawn_x, ax.title, ax.xaxis.label]:
            if not t.get_text() or not t.get_visible():
                continue
            box = t.get_window_extent(renderer)
            if box.x0 < 0 or box.y0 < 0 or box.x1 > width or box.y1 > height:
                out.append(t.get_text())
    return out


def test_the_longest_phase_label_fits_left_of_the_axes() -> None:
    """The layout is fixed (not matplotlib's constrained layout, for speed): the left margin grows
    with the longest line of the phase labels, and every label, title and axis label is drawn
    inside the figure, also with deadlines far past the axis and a one-second incident."""
    assert left_margin(["detect"]) < left_margin(["communicate\n(due +1.44e+04 min)"]) <= 0.45
    assert left_margin(["a\nb"]) == left_margin(["a"])  # measured by line
    long_due = [
        d.model_copy(update={"due_at": _at(60 * 24 * 9)}) if d.phase == "rca" else d
        for d in DEADLINES
    ]
    timings = incident_timings(INC, TIMELINE, long_due)
    fig = build_figure(timings, metric_series(INC, [ALERT], TIMELINE, load_policy()), "INC-1")
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert any("due +" in label for label in labels)
    assert _inside_figure(fig) == []


def test_warm_up_draws_a_chart_of_every_phase() -> None:
    """The preload's sample chart goes through the whole drawing path (what it is for) and raises
    nothing; it writes no file."""
    warm_up()


def test_a_chart_child_that_dies_is_replaced_by_drawing_here(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The RCA's chart child killed (memory, say): the chart is still written, by the run's own
    process, and the log says why."""

    async def dead(*args: object) -> None:
        raise ChildProcessFailed("write_chart: the child process (pid 9) exited with code -9")

    monkeypatch.setattr(rca, "in_child", dead)
    timings = incident_timings(INC, TIMELINE, DEADLINES)
    series = metric_series(INC, [ALERT], TIMELINE, load_policy())
    with caplog.at_level("WARNING"):
        path = asyncio.run(rca.draw_chart(tmp_path / "INC-1.png", timings, series, "INC-1"))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "exited with code -9; drawing the chart in this process" in caplog.text
