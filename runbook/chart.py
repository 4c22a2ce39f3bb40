"""A picture of the incident: each phase against its SLA window, and the metric that triggered it.

``metric_series`` gathers the readings the ledger holds (alert values, triage's findings, readings the
RCA took); ``build_figure`` draws them with matplotlib (Agg, no display; imported lazily: ~0.5 s);
``write_chart`` saves a PNG. Nothing here is invented: a panel without data says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from runbook.models import Alert, Incident, Phase, TimelineEvent
from runbook.policy import Policy
from runbook.rca import phases_in_run_order, utc
from runbook.timings import PhaseTiming, Timings

if TYPE_CHECKING:
    from matplotlib.figure import Figure

MET, BREACHED, UNKNOWN, SLA = "#2e7d32", "#c62828", "#9e9e9e", "#1565c0"
NO_SERIES = "no metric series recorded"

# triage's finding for each policy metric (same units as the policy's thresholds)
FINDING_FIELDS = {
    "error_rate": "error_rate_pct",
    "p95_latency": "p95_ms",
    "db_connections": "db_connection_pct",
    "edge_function_success": "function_success_pct",
}
# words in an alert's name or summary, and the policy metric they mean (first match wins)
KEYWORDS = (
    ("latency", "p95_latency"),
    ("p95", "p95_latency"),
    ("availability", "availability"),
    ("connection", "db_connections"),
    ("edge", "edge_function_success"),
    ("function", "edge_function_success"),
    ("error", "error_rate"),
)
SCENARIO_METRICS = {
    "db-degradation": "db_connections",
    "edge-timeouts": "edge_function_success",
}


class MetricPoint(BaseModel):
    at: datetime
    value: float
    source: str = Field(description="alert, triage or reading")


class MetricSeries(BaseModel):
    """The triggering metric's recorded values, in the policy's unit, and its alert threshold."""

    metric: str
    unit: str = ""
    threshold: float | None = None
    points: list[MetricPoint] = Field(default_factory=list)


def trigger_metric(incident: Incident, alerts: Sequence[Alert]) -> str:
    """The policy metric the incident was opened for: an alert's ``metric`` annotation or label, else
    a word in its name or summary, else the scenario's usual metric, else the error rate."""
    for a in alerts:
        named = a.annotations.get("metric") or a.labels.get("metric")
        if named:
            return named
    for a in alerts:
        text = f"{a.labels.get('alertname', '')} {a.summary}".lower()
        for word, metric in KEYWORDS:
            if word in text:
                return metric
    return SCENARIO_METRICS.get(incident.scenario or "", "error_rate")


def _number(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def metric_series(
    incident: Incident,
    alerts: Sequence[Alert],
    timeline: Sequence[TimelineEvent],
    policy: Policy,
) -> MetricSeries:
    """Every recorded value of the triggering metric, oldest first: the alerts' ``value``, triage's
    finding (at its diagnosis event) and ``metric_reading`` events."""
    metric = trigger_metric(incident, alerts)
    threshold = policy.thresholds.get(metric)
    points: list[MetricPoint] = []
    for a in alerts:
        if (a.annotations.get("metric") or a.labels.get("metric") or metric) != metric:
            continue
        value = _number(a.annotations.get("value"))
        when = a.started_at or a.received_at
        if value is not None and when is not None:
            points.append(MetricPoint(at=utc(when), value=value, source="alert"))
    findings = (incident.diagnosis or {}).get("findings") or {}
    found = _number(findings.get(FINDING_FIELDS.get(metric, "")))
    diagnosed = next((e for e in timeline if e.kind == "diagnosis"), None)
    if found is not None and diagnosed is not None:
        points.append(MetricPoint(at=utc(diagnosed.at), value=found, source="triage"))
    for e in timeline:
        value = _number(e.data.get("value"))
        if e.kind == "metric_reading" and e.data.get("metric") == metric and value is not None:
            points.append(MetricPoint(at=utc(e.at), value=value, source="reading"))
    return MetricSeries(
        metric=metric,
        unit=threshold.unit if threshold else "",
        threshold=threshold.alert if threshold else None,
        points=sorted(points, key=lambda p: p.at),
    )


def _scale(span_s: float) -> tuple[float, str]:
    if span_s < 180:
        return 1.0, "s"
    if span_s < 3 * 3600:
        return 60.0, "min"
    return 3600.0, "h"


FIG_W_IN = 9.0
LABEL_CHAR_IN = 0.085  # the average width of a 10 pt character of matplotlib's default font


def left_margin(labels: Sequence[str]) -> float:
    """The figure fraction left of the axes: room for the longest line of the phase labels (and,
    at least, for the metric's tick values and axis label)."""
    longest = max((len(line) for label in labels for line in label.split("\n")), default=0)
    return min(0.45, max(0.09, (longest * LABEL_CHAR_IN + 0.25) / FIG_W_IN))


def build_figure(timings: Timings, series: MetricSeries, title: str) -> Figure:
    """The figure: (a) one horizontal bar per phase from its start to its end (red when it missed its
    deadline), over an outline of its SLA window (detection to deadline); (b) the metric's recorded
    values across the incident, with its alert threshold.

    The phase bars are the container labelled ``phases`` of the first axes; the SLA outlines the one
    labelled ``sla``.
    """
    from matplotlib.figure import Figure

    t0 = utc(timings.detected_at)
    phases = phases_in_run_order(timings)

    def off(at: datetime | None) -> float | None:
        return None if at is None else (utc(at) - t0).total_seconds()

    # the axis spans what happened; a deadline further out is written at the bar's end instead
    seen = [
        x
        for x in (
            *(off(p.ended_at) for p in timings.phases),
            *(off(p.started_at) for p in timings.phases),
            *(off(p.at) for p in series.points),
            off(timings.resolved_at),
        )
        if x is not None
    ]
    right = (
        max(seen, default=0.0) or max((p.sla_s or 0.0 for p in timings.phases), default=0.0) or 60.0
    )
    div, unit = _scale(right)
    right = right * 1.15 / div
    left = min([0.0, *(x / div for x in seen)]) - right * 0.03
    # fixed margins, not matplotlib's constrained layout: that measures every text twice and was
    # more than half of the chart's CPU (0.47 -> 0.21 s on a slow 2-core machine); the left margin
    # is sized from the longest phase label instead
    fig = Figure(figsize=(FIG_W_IN, 6.5))
    ax_phase, ax_metric = fig.subplots(2, 1, sharex=True, height_ratios=(1.1, 1))
    fig.suptitle(title)

    names = [p.phase.value for p in phases]
    ys = list(range(len(names)))
    starts = [(off(p.started_at) or 0.0) / div for p in phases]
    widths = [(p.duration_s or 0.0) / div for p in phases]
    colors = [BREACHED if p.breached else MET if p.breached is False else UNKNOWN for p in phases]
    ax_phase.barh(
        ys,
        [(p.sla_s or 0.0) / div for p in phases],
        height=0.7,
        fill=False,
        edgecolor=[SLA if p.sla_s is not None else "none" for p in phases],
        linestyle="--",
        label="sla",
    )
    ax_phase.barh(ys, widths, left=starts, height=0.4, color=colors, label="phases")
    labels = []
    for y, p in zip(ys, phases, strict=True):
        if p.duration_s is None:
            ax_phase.text(starts[y], y, " no end recorded", va="center", fontsize=8)
        if p.sla_s is None:
            labels.append(f"{p.phase.value}\n(no deadline)")
        elif p.sla_s / div > right:  # past the axis: say where it is
            labels.append(f"{p.phase.value}\n(due +{p.sla_s / div:.3g} {unit})")
        else:
            labels.append(p.phase.value)
    ax_phase.set_xlim(left, right)
    ax_phase.set_yticks(ys, labels)
    fig.subplots_adjust(left=left_margin(labels), right=0.97, top=0.9, bottom=0.09, hspace=0.25)
    ax_phase.invert_yaxis()
    ax_phase.set_title("Phases: duration (green met, red missed) within the SLA window (dashed)")
    if not names:
        ax_phase.text(
            0.5, 0.5, "no phase timings recorded", ha="center", transform=ax_phase.transAxes
        )

    ax_metric.set_title(f"{series.metric} ({series.unit})" if series.unit else series.metric)
    if series.points:
        xs = [(off(p.at) or 0.0) / div for p in series.points]
        ax_metric.plot(xs, [p.value for p in series.points], marker="o", label=series.metric)
        for x, point in zip(xs, series.points, strict=True):
            ax_metric.annotate(
                point.source,
                (x, point.value),
                fontsize=7,
                xytext=(3, 3),
                textcoords="offset points",
            )
        if series.threshold is not None:
            ax_metric.axhline(
                series.threshold, color=BREACHED, linestyle=":", label="alert threshold"
            )
        ax_metric.legend(loc="best", fontsize=8)
    else:
        ax_metric.text(0.5, 0.5, NO_SERIES, ha="center", va="center", transform=ax_metric.transAxes)
    for at, label, height in (
        (timings.mitigated_at, " mitigated", 0.98),
        (timings.resolved_at, " resolved", 0.9),
    ):
        moment = off(at)
        if moment is not None:
            ax_metric.axvline(moment / div, color=UNKNOWN, linestyle="--")
            ax_metric.annotate(
                label,
                (moment / div, height),
                xycoords=("data", "axes fraction"),
                fontsize=8,
                va="top",
            )
    ax_metric.set_xlabel(f"{unit} since detection ({t0:%Y-%m-%d %H:%M:%S} UTC)")
    return fig


def write_chart(path: Path, timings: Timings, series: MetricSeries, title: str) -> Path:
    """Draw the figure and save it at ``path`` (PNG, or SVG for a ``.svg`` name)."""
    fig = build_figure(timings, series, title)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


def warm_up() -> None:
    """Draw a sample chart in memory once, so that a process forked after this (a served run, and the
    child an RCA draws its chart in) finds matplotlib's fonts, glyphs and text layouts cached: the
    first chart a process draws costs 0.05-0.2 s more than the next."""
    import io

    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    phases = [
        PhaseTiming(
            phase=phase,
            started_at=t0 + timedelta(seconds=60 * k),
            ended_at=t0 + timedelta(seconds=60 * k + 45),
            due_at=t0 + timedelta(seconds=60 * k + 300),
            sla_s=60 * k + 300,
            duration_s=45,
            breached=k == 2,
        )
        for k, phase in enumerate(Phase)
    ]
    timings = Timings(detected_at=t0, mitigated_at=t0 + timedelta(minutes=3), phases=phases)
    series = MetricSeries(
        metric="error_rate",
        unit="%",
        threshold=5.0,
        points=[
            MetricPoint(at=t0 + timedelta(seconds=30 * k), value=v, source="reading")
            for k, v in enumerate((12.5, 9.0, 3.2, 0.4))
        ],
    )
    build_figure(timings, series, "INC-0: warm-up (due +12.5 min)").savefig(
        io.BytesIO(), format="png", dpi=100
    )
