"""The gateway's Prometheus metrics, one registry per app (tests build many apps in one process).

With several worker processes (``runbook gateway --workers N``) each worker counts in files under
``PROMETHEUS_MULTIPROC_DIR`` (prometheus_client's multiprocess mode, which the supervisor turns on
before the workers start), and ``/metrics``, whichever worker answers it, reports the sum of all
workers: counters and the histogram added up, the group commits of the live workers summed, the
dedup ratio computed from the summed counters, the outbox figures from the ledger.
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

# ack latency: the targets are p99 <= 25 ms and 2xx within 1 s
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class GatewayMetrics:
    """Counters, gauges and the latency histogram of one gateway.

    Attributes:
        registry: what ``/metrics`` renders.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        # prometheus_client reads it when first imported; the workers inherit it from the supervisor
        self.multiprocess_dir = os.environ.get(MULTIPROC_ENV)
        r = self.registry
        self.received = Counter(
            "runbook_gateway_alerts_received", "Alerts (or refused requests) by source and outcome: "
            "stored, duplicate, bad_request, unauthorized, unavailable ...", ["source", "outcome"],
            registry=r,
        )  # fmt: skip
        self.duplicates = Counter(
            "runbook_gateway_duplicates_dropped", "Redeliveries recognised and ignored.", ["source"],
            registry=r,
        )  # fmt: skip
        self.opened = Counter(
            "runbook_gateway_incidents_opened",
            "Incidents opened by alerts.",
            ["source"],
            registry=r,
        )
        self.attached = Counter(
            "runbook_gateway_alerts_attached", "Alerts that joined an open incident.", ["source"],
            registry=r,
        )  # fmt: skip
        self.dedup_ratio = Gauge(
            "runbook_gateway_dedup_ratio",
            "Share of received alerts that opened no incident (duplicates and attached ones).",
            registry=r,
            multiprocess_mode="mostrecent",
        )
        self.outbox_pending = Gauge(
            "runbook_gateway_outbox_pending", "Incident launches not yet delivered.", registry=r,
            multiprocess_mode="mostrecent",
        )  # fmt: skip
        self.outbox_lag = Gauge(
            "runbook_gateway_outbox_lag_seconds",
            "Age of the oldest undelivered launch.",
            registry=r,
            multiprocess_mode="mostrecent",
        )
        self.latency = Histogram(
            "runbook_gateway_request_seconds", "Time from request to answer, by source and status.",
            ["source", "status"], buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.commits = Gauge(
            "runbook_gateway_group_commits",
            "Ledger transactions the group commit made.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self._alerts = 0
        self._not_opened = 0
        # labelled children by label values: ``labels()`` takes a lock and builds a key per call
        self._children: dict[tuple[str, ...], Any] = {}

    def _child(self, metric: Any, *values: str) -> Any:
        key = (str(id(metric)), *values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*values)
        return child

    def observe(self, source: str, status: int, seconds: float) -> None:
        """One answered request: its latency by source and status."""
        self._child(self.latency, source, str(status)).observe(seconds)

    def count_outcomes(
        self, source: str, opened: int, attached: int, duplicates: int, other: int
    ) -> None:
        """Count one request's stored alerts."""
        stored = opened + attached + other
        if stored:
            self._child(self.received, source, "stored").inc(stored)
        if duplicates:
            self._child(self.received, source, "duplicate").inc(duplicates)
            self._child(self.duplicates, source).inc(duplicates)
        if opened:
            self._child(self.opened, source).inc(opened)
        if attached:
            self._child(self.attached, source).inc(attached)
        self._alerts += stored + duplicates
        self._not_opened += stored + duplicates - opened

    def render(self, outbox: dict[str, object] | None, commits: int) -> bytes:
        """The text exposition format, with the gauges brought up to date (all workers' sums in
        multiprocess mode)."""
        registry = self.registry
        alerts, not_opened = float(self._alerts), float(self._not_opened)
        if self.multiprocess_dir is not None:
            registry = CollectorRegistry()
            MultiProcessCollector(registry, path=self.multiprocess_dir)
            alerts, not_opened = _summed_outcomes(registry)
        if alerts:
            self.dedup_ratio.set(not_opened / alerts)
        if outbox is not None:
            pending = outbox.get("pending")
            age = outbox.get("oldest_age_s")
            self.outbox_pending.set(float(pending) if isinstance(pending, int | float) else 0.0)
            self.outbox_lag.set(float(age) if isinstance(age, int | float) else 0.0)
        self.commits.set(commits)
        return generate_latest(registry)


def _summed_outcomes(registry: CollectorRegistry) -> tuple[float, float]:
    """(alerts received and stored or dropped as duplicates, those that opened no incident), summed
    over every worker's files."""
    alerts = opened = 0.0
    for family in registry.collect():
        for sample in family.samples:
            if not sample.name.endswith("_total"):
                continue
            if family.name == "runbook_gateway_alerts_received" and sample.labels.get(
                "outcome"
            ) in ("stored", "duplicate"):
                alerts += sample.value
            elif family.name == "runbook_gateway_incidents_opened":
                opened += sample.value
    return alerts, alerts - opened
