"""The app's health in numbers, from two Prometheus scrapes. Pure functions, no I/O.

A scrape is a ``MetricsSnapshot`` (every sample, flat, with the time it was taken). Rates come from
the difference of two snapshots, as Prometheus' ``increase()`` would compute them (a counter that went
down was reset, so its new value is the increase). The metric names are the product app's:

- ``http_requests_total{status}`` (status "2xx"/"5xx" or a code such as "503"),
  ``http_request_errors_total``;
- ``http_request_duration_seconds_bucket{le}`` / ``_sum`` / ``_count`` (a histogram);
- ``db_connections_in_use``, ``db_connections_max`` (gauges);
- ``edge_function_invocations_total{function, outcome="success|error|timeout"}``.

Every reading is ``None`` when the window has no data for it (no requests, no histogram): "no
data" must never be mistaken for "0 % errors".
"""

from __future__ import annotations

import math
from datetime import datetime

from prometheus_client.parser import text_string_to_metric_families
from pydantic import BaseModel, ConfigDict, Field

REQUESTS = "http_requests_total"
ERRORS = "http_request_errors_total"
DURATION = "http_request_duration_seconds"
DB_IN_USE = "db_connections_in_use"
DB_MAX = "db_connections_max"
EDGE = "edge_function_invocations_total"


class Sample(BaseModel):
    """One exposition line: sample name, labels and value."""

    model_config = ConfigDict(frozen=True)

    name: str
    labels: dict[str, str] = Field(default_factory=dict)
    value: float


class MetricsSnapshot(BaseModel):
    """Every sample of one scrape, and when it was taken."""

    taken_at: datetime
    samples: list[Sample] = Field(default_factory=list)

    def select(self, name: str, **labels: str) -> list[Sample]:
        """Samples called ``name`` whose labels include ``labels``."""
        return [
            s
            for s in self.samples
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
        ]

    def has(self, name: str) -> bool:
        """True when the scrape has at least one sample called ``name``."""
        return any(s.name == name for s in self.samples)

    def total(self, name: str, **labels: str) -> float:
        """Sum of the matching samples (0.0 when there are none)."""
        return sum(s.value for s in self.select(name, **labels))


def parse_exposition(text: str, taken_at: datetime) -> MetricsSnapshot:
    """Parse Prometheus text exposition into a snapshot.

    Args:
        text: the body of a ``/metrics`` answer.
        taken_at: when the scrape was taken (the caller's clock).

    Returns:
        The snapshot.

    Raises:
        ValueError: the text is not valid exposition format.
    """
    samples = [
        Sample(name=s.name, labels=dict(s.labels), value=float(s.value))
        for family in text_string_to_metric_families(text)
        for s in family.samples
    ]
    return MetricsSnapshot(taken_at=taken_at, samples=samples)


def _key(sample: Sample) -> tuple[str, tuple[tuple[str, str], ...]]:
    return sample.name, tuple(sorted(sample.labels.items()))


def increase(before: MetricsSnapshot, after: MetricsSnapshot, name: str, **labels: str) -> float:
    """How much the matching counters grew between the scrapes (resets handled like Prometheus)."""
    old = {_key(s): s.value for s in before.select(name, **labels)}
    grown = 0.0
    for s in after.select(name, **labels):
        prev = old.get(_key(s), 0.0)
        grown += s.value - prev if s.value >= prev else s.value
    return grown


def _error_increase(before: MetricsSnapshot, after: MetricsSnapshot) -> float:
    by_status = [s for s in after.select(REQUESTS) if "status" in s.labels]
    if by_status:
        return sum(
            increase(before, after, REQUESTS, status=status)
            for status in {s.labels["status"] for s in by_status}
            if status.startswith("5")
        )
    return increase(before, after, ERRORS)


def request_count(before: MetricsSnapshot, after: MetricsSnapshot) -> float:
    """Requests served between the scrapes."""
    return increase(before, after, REQUESTS)


def error_rate(before: MetricsSnapshot, after: MetricsSnapshot) -> float | None:
    """Fraction of requests that failed (5xx) between the scrapes; None without requests."""
    total = request_count(before, after)
    if total <= 0:
        return None
    return min(1.0, _error_increase(before, after) / total)


def availability(before: MetricsSnapshot, after: MetricsSnapshot) -> float | None:
    """Fraction of requests served without a server error between the scrapes (1 - error rate)."""
    rate = error_rate(before, after)
    return None if rate is None else 1.0 - rate


def histogram_quantile(q: float, buckets: list[tuple[float, float]]) -> float | None:
    """Prometheus' ``histogram_quantile``: the q-quantile from cumulative ``(le, count)`` buckets.

    Linear interpolation inside the bucket holding the rank; the lowest bucket starts at 0; a rank
    in the +Inf bucket answers the highest finite bound. None when the buckets hold no
    observations or have no +Inf bucket.
    """
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile must be within [0, 1], not {q}")
    buckets = sorted(buckets)
    if len(buckets) < 2 or not math.isinf(buckets[-1][0]):
        return None
    observed = buckets[-1][1]
    if observed <= 0:
        return None
    rank = q * observed
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound
            if bound <= 0 or count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (
                count - lower_count
            )
        lower_bound, lower_count = bound, count
    return lower_bound  # pragma: no cover - the +Inf bucket always holds the rank


def _bucket_increase(before: MetricsSnapshot, after: MetricsSnapshot) -> list[tuple[float, float]]:
    name = DURATION + "_bucket"
    bounds = {s.labels["le"] for s in after.select(name) if "le" in s.labels}
    return [(float(le), increase(before, after, name, le=le)) for le in bounds]


def quantile_ms(q: float, before: MetricsSnapshot, after: MetricsSnapshot) -> float | None:
    """The q-quantile of request latency between the scrapes, in milliseconds."""
    seconds = histogram_quantile(q, _bucket_increase(before, after))
    return None if seconds is None else seconds * 1000.0


def p95_ms(before: MetricsSnapshot, after: MetricsSnapshot) -> float | None:
    """95th-percentile request latency between the scrapes, in milliseconds."""
    return quantile_ms(0.95, before, after)


def throughput_rps(before: MetricsSnapshot, after: MetricsSnapshot) -> float | None:
    """Requests per second between the scrapes; None when no time passed."""
    seconds = (after.taken_at - before.taken_at).total_seconds()
    if seconds <= 0:
        return None
    return request_count(before, after) / seconds


def db_connection_ratio(snapshot: MetricsSnapshot) -> float | None:
    """Database connections in use as a fraction of the limit (a gauge: one scrape is enough)."""
    if not snapshot.has(DB_IN_USE) or not snapshot.has(DB_MAX):
        return None
    limit = snapshot.total(DB_MAX)
    return snapshot.total(DB_IN_USE) / limit if limit > 0 else None


def edge_function_success(
    before: MetricsSnapshot, after: MetricsSnapshot, function: str | None = None
) -> float | None:
    """Fraction of edge-function invocations that succeeded between the scrapes.

    Args:
        before: the earlier scrape.
        after: the later scrape.
        function: one function's slug; all functions when None.

    Returns:
        success / all invocations, or None when there were none.
    """
    match = {"function": function} if function else {}
    total = increase(before, after, EDGE, **match)
    if total <= 0:
        return None
    return increase(before, after, EDGE, outcome="success", **match) / total


class Readings(BaseModel):
    """The monitoring thresholds' inputs over one window (None where the window has no data)."""

    model_config = ConfigDict(extra="ignore")

    window_start: datetime = Field(description="When the earlier scrape was taken.")
    window_end: datetime = Field(description="When the later scrape was taken.")
    requests: float = Field(description="Requests served in the window.")
    error_rate: float | None = Field(None, description="Fraction of requests that failed (5xx).")
    p95_ms: float | None = Field(None, description="95th-percentile latency in milliseconds.")
    throughput_rps: float | None = Field(None, description="Requests per second.")
    availability: float | None = Field(None, description="Fraction of requests served well.")
    db_connection_ratio: float | None = Field(
        None, description="Database connections in use over the limit, at the window's end."
    )
    edge_function_success: float | None = Field(
        None, description="Fraction of edge-function invocations that succeeded."
    )
    errors_by_type: dict[str, float] = Field(
        default_factory=dict,
        description="Failed requests in the window by error type, when exposed.",
    )

    @property
    def window_seconds(self) -> float:
        """Length of the window in seconds."""
        return (self.window_end - self.window_start).total_seconds()


def errors_by_type(before: MetricsSnapshot, after: MetricsSnapshot) -> dict[str, float]:
    """Growth of ``http_request_errors_total`` per ``type`` label (empty when not exposed)."""
    kinds = {
        s.labels["type"] for s in after.select("http_request_errors_total") if "type" in s.labels
    }
    grown = {k: increase(before, after, "http_request_errors_total", type=k) for k in sorted(kinds)}
    return {k: v for k, v in grown.items() if v > 0}


def readings_between(before: MetricsSnapshot, after: MetricsSnapshot) -> Readings:
    """Every reading over the window between two scrapes of the same app."""
    return Readings(
        window_start=before.taken_at,
        window_end=after.taken_at,
        requests=request_count(before, after),
        error_rate=error_rate(before, after),
        p95_ms=p95_ms(before, after),
        throughput_rps=throughput_rps(before, after),
        availability=availability(before, after),
        db_connection_ratio=db_connection_ratio(after),
        edge_function_success=edge_function_success(before, after),
        errors_by_type=errors_by_type(before, after),
    )
