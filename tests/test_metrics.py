"""The metrics math on hand-made Prometheus exposition text, with answers computed by hand."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from runbook.metrics import (
    Readings,
    availability,
    db_connection_ratio,
    edge_function_success,
    error_rate,
    histogram_quantile,
    increase,
    p95_ms,
    parse_exposition,
    quantile_ms,
    readings_between,
    throughput_rps,
)

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)

BEFORE = """\
# TYPE http_requests_total counter
http_requests_total{status="2xx"} 1000
http_requests_total{status="5xx"} 10
# TYPE http_request_duration_seconds histogram
http_request_duration_seconds_bucket{le="0.1"} 500
http_request_duration_seconds_bucket{le="0.25"} 900
http_request_duration_seconds_bucket{le="0.5"} 1000
http_request_duration_seconds_bucket{le="1.0"} 1005
http_request_duration_seconds_bucket{le="+Inf"} 1010
http_request_duration_seconds_sum 150.0
http_request_duration_seconds_count 1010
# TYPE db_connections_in_use gauge
db_connections_in_use 30
# TYPE db_connections_max gauge
db_connections_max 60
# TYPE edge_function_invocations_total counter
edge_function_invocations_total{function="a",outcome="success"} 100
edge_function_invocations_total{function="b",outcome="success"} 100
"""

# 60 s later: +1000 requests, 20 of them 5xx; latency deltas 400 / 800 / 1000 / 1000 / 1000
AFTER = """\
# TYPE http_requests_total counter
http_requests_total{status="2xx"} 1980
http_requests_total{status="5xx"} 30
# TYPE http_request_duration_seconds histogram
http_request_duration_seconds_bucket{le="0.1"} 900
http_request_duration_seconds_bucket{le="0.25"} 1700
http_request_duration_seconds_bucket{le="0.5"} 2000
http_request_duration_seconds_bucket{le="1.0"} 2005
http_request_duration_seconds_bucket{le="+Inf"} 2010
http_request_duration_seconds_sum 300.0
http_request_duration_seconds_count 2010
# TYPE db_connections_in_use gauge
db_connections_in_use 12
# TYPE db_connections_max gauge
db_connections_max 60
# TYPE edge_function_invocations_total counter
edge_function_invocations_total{function="a",outcome="success"} 195
edge_function_invocations_total{function="a",outcome="error"} 3
edge_function_invocations_total{function="a",outcome="timeout"} 2
edge_function_invocations_total{function="b",outcome="success"} 200
"""


@pytest.fixture
def window():  # type: ignore[no-untyped-def]
    return parse_exposition(BEFORE, T0), parse_exposition(AFTER, T0 + timedelta(seconds=60))


def test_parse_keeps_every_sample_with_labels(window) -> None:  # type: ignore[no-untyped-def]
    """Parsing keeps each sample's full name, labels and value, and the caller's timestamp."""
    before, _ = window
    assert before.taken_at == T0
    assert before.total("http_requests_total", status="5xx") == 10
    assert before.total("http_requests_total") == 1010
    assert before.select("http_request_duration_seconds_bucket", le="+Inf")[0].value == 1010


def test_error_rate_and_availability(window) -> None:  # type: ignore[no-untyped-def]
    """20 failures out of 1000 requests in the window is a 2 % error rate and 98 % availability."""
    before, after = window
    assert error_rate(before, after) == pytest.approx(0.02)
    assert availability(before, after) == pytest.approx(0.98)


def test_p95_interpolates_like_histogram_quantile(window) -> None:  # type: ignore[no-untyped-def]
    """Rank 950 of 1000 lies in (0.25, 0.5] holding ranks 800-1000: 0.25 + 0.25 * 150/200 = 437.5 ms."""
    before, after = window
    assert p95_ms(before, after) == pytest.approx(437.5)
    # median: rank 500 in (0.1, 0.25] holding 400-800: 0.1 + 0.15 * 100/400 = 137.5 ms
    assert quantile_ms(0.5, before, after) == pytest.approx(137.5)


def test_throughput_over_the_window(window) -> None:  # type: ignore[no-untyped-def]
    """1000 requests in 60 s is 16.67 requests per second."""
    before, after = window
    assert throughput_rps(before, after) == pytest.approx(1000 / 60)


def test_db_connection_ratio_reads_the_gauges(window) -> None:  # type: ignore[no-untyped-def]
    """12 connections in use of 60 is a ratio of 0.2 (gauges: the later scrape alone decides)."""
    _, after = window
    assert db_connection_ratio(after) == pytest.approx(0.2)


def test_edge_function_success_overall_and_per_function(window) -> None:  # type: ignore[no-untyped-def]
    """Function a succeeded 95 of 100 times, b 100 of 100: 97.5 % overall."""
    before, after = window
    assert edge_function_success(before, after, "a") == pytest.approx(0.95)
    assert edge_function_success(before, after, "b") == pytest.approx(1.0)
    assert edge_function_success(before, after) == pytest.approx(0.975)


def test_readings_between_bundles_every_reading(window) -> None:  # type: ignore[no-untyped-def]
    """readings_between reports the same numbers as the single functions, for the same window."""
    before, after = window
    r = readings_between(before, after)
    assert isinstance(r, Readings)
    assert r.window_seconds == 60
    assert r.requests == 1000
    assert r.error_rate == pytest.approx(0.02)
    assert r.p95_ms == pytest.approx(437.5)
    assert r.throughput_rps == pytest.approx(1000 / 60)
    assert r.availability == pytest.approx(0.98)
    assert r.db_connection_ratio == pytest.approx(0.2)
    assert r.edge_function_success == pytest.approx(0.975)


def test_counter_reset_counts_the_new_value() -> None:
    """A counter that went down was reset: its new value is the increase, as in Prometheus."""
    before = parse_exposition('http_requests_total{status="2xx"} 5000\n', T0)
    after = parse_exposition('http_requests_total{status="2xx"} 40\n', T0 + timedelta(seconds=10))
    assert increase(before, after, "http_requests_total") == 40


def test_empty_window_has_no_readings() -> None:
    """With no requests in the window every rate is None, never a reassuring 0 %."""
    snap = parse_exposition(BEFORE, T0)
    r = readings_between(snap, snap.model_copy(update={"taken_at": T0 + timedelta(seconds=30)}))
    assert r.requests == 0
    assert r.error_rate is None and r.p95_ms is None and r.availability is None
    assert r.edge_function_success is None
    assert r.throughput_rps == 0


def test_missing_gauges_and_zero_time() -> None:
    """Without the db gauges the ratio is None; two scrapes at one instant have no throughput."""
    snap = parse_exposition('http_requests_total{status="2xx"} 1\n', T0)
    assert db_connection_ratio(snap) is None
    assert throughput_rps(snap, snap) is None


def test_error_rate_falls_back_to_the_errors_counter() -> None:
    """Without a status label, errors come from http_request_errors_total (summed over types)."""
    before = parse_exposition("http_requests_total 100\nhttp_request_errors_total 1\n", T0)
    after = parse_exposition(
        'http_requests_total 300\nhttp_request_errors_total{type="X"} 3\n'
        'http_request_errors_total{type="Y"} 2\n',
        T0 + timedelta(seconds=10),
    )
    # the unlabelled series vanished (a reset): X and Y are new, 5 errors of 200 requests
    assert error_rate(before, after) == pytest.approx(5 / 200)


def test_status_codes_count_as_classes() -> None:
    """Numeric status labels work too: every 5.. code is a server error."""
    text = (
        'http_requests_total{{status="200"}} {a}\nhttp_requests_total{{status="503"}} {b}\n'
        'http_requests_total{{status="500"}} {c}\nhttp_requests_total{{status="404"}} {d}\n'
    )
    before = parse_exposition(text.format(a=0, b=0, c=0, d=0), T0)
    after = parse_exposition(text.format(a=90, b=4, c=1, d=5), T0 + timedelta(seconds=1))
    assert error_rate(before, after) == pytest.approx(0.05)


def test_histogram_quantile_edges() -> None:
    """The lowest bucket interpolates from 0; a rank in +Inf answers the highest finite bound."""
    inf = float("inf")
    assert histogram_quantile(0.5, [(0.2, 10), (1.0, 10), (inf, 10)]) == pytest.approx(0.1)
    assert histogram_quantile(0.99, [(0.2, 10), (1.0, 50), (inf, 100)]) == pytest.approx(1.0)
    assert histogram_quantile(0.5, [(0.2, 0), (inf, 0)]) is None
    assert histogram_quantile(0.5, [(0.2, 5)]) is None
    with pytest.raises(ValueError, match="quantile"):
        histogram_quantile(1.5, [(0.2, 10), (inf, 10)])


def test_not_exposition_text_is_a_value_error() -> None:
    """Text that is not exposition format (an HTML error page) raises ValueError."""
    with pytest.raises(ValueError):
        parse_exposition("<html><body>Bad gateway</body></html>", T0)


@given(
    deltas=st.lists(st.integers(min_value=0, max_value=1000), min_size=1, max_size=8),
    q=st.floats(min_value=0.0, max_value=1.0),
)
def test_quantile_stays_within_the_buckets(deltas: list[int], q: float) -> None:
    """Any quantile of any non-empty histogram lies between 0 and the highest finite bound."""
    bounds = [0.1 * (i + 1) for i in range(len(deltas))]
    cumulative, running = [], 0
    for bound, d in zip(bounds, deltas, strict=True):
        running += d
        cumulative.append((bound, float(running)))
    cumulative.append((float("inf"), float(running + 1)))
    value = histogram_quantile(q, cumulative)
    assert value is not None
    assert 0.0 <= value <= bounds[-1] + 1e-9
