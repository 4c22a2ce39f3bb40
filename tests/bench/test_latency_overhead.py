"""Pure parts of `runbook bench latency` and `runbook bench overhead`: percentiles and the critical
path computed from a hand-made request log (no timing assertions)."""

from __future__ import annotations

import pytest

from runbook.bench.latency import percentile, summarize
from runbook.bench.overhead import Interval, critical_chain, phase_figures, summarize_runs


def test_percentile_interpolates_between_ranks() -> None:
    """p50 of an even count is the mean of the middle two; p95 interpolates; p0/p100 are the ends."""
    values = [4.0, 1.0, 3.0, 2.0]
    assert percentile(values, 50) == pytest.approx(2.5)
    assert percentile(values, 95) == pytest.approx(3.85)
    assert (percentile(values, 0), percentile(values, 100)) == (1.0, 4.0)


def test_percentile_refuses_no_values_and_bad_q() -> None:
    """An empty sample or a q outside 0-100 is a clear error, not a number."""
    with pytest.raises(ValueError, match="no values"):
        percentile([], 50)
    with pytest.raises(ValueError, match="0-100"):
        percentile([1.0], 101)


def test_summarize_reports_totals_and_every_stage() -> None:
    """The JSON has alerts, p50_s/p95_s/max_s of the total, and p50/p95 for each stage."""
    samples = [
        {
            "ack_s": 0.01,
            "created_s": 0.1,
            "parent_running_s": 0.5,
            "detect_running_s": 0.9,
            "first_task_s": t,
        }  # fmt: skip
        for t in (1.0, 2.0, 3.0)
    ]
    out = summarize(samples)
    assert (out["alerts"], out["p50_s"], out["max_s"]) == (3, 2.0, 3.0)
    assert out["p95_s"] == pytest.approx(2.9)
    assert set(out["stages"]) == {
        "ack_s", "created_s", "parent_running_s", "detect_running_s", "first_task_s"
    }  # fmt: skip


def test_critical_chain_keeps_sequential_calls_and_one_of_concurrent_ones() -> None:
    """Three calls at once then one after them: the chain is the longest concurrent one plus the
    later one (overlapping calls are independent, never both on the chain)."""
    log = [
        Interval(0.0, 0.2, label="health"),
        Interval(0.0, 0.25, label="auth"),
        Interval(0.01, 0.21, label="rest"),
        Interval(0.3, 0.5, label="page"),
    ]
    chain = critical_chain(log)
    assert [i.label for i in chain] == ["auth", "page"]


def test_critical_chain_prefers_the_heavier_of_two_paths() -> None:
    """A long call overlapping two short sequential ones: the two short ones win when together
    they are longer."""
    log = [Interval(0.0, 0.3, label="long"), Interval(0.0, 0.2, label="a"),
           Interval(0.2, 0.4, label="b")]  # fmt: skip
    assert [i.label for i in critical_chain(log)] == ["a", "b"]
    assert critical_chain([]) == []


def test_phase_figures_exclude_waits_from_both_sides() -> None:
    """A phase of 1.0 s wall: two sequential 0.2 s calls with a 0.4 s policy wait between them;
    the wait leaves numerator and denominator: ratio (1.0 - 0.4) / 0.4 = 1.5. Calls outside the
    window do not count."""
    calls = [Interval(10.0, 10.2), Interval(10.6, 10.8), Interval(20.0, 20.2)]
    waits = [Interval(10.2, 10.6, kind="wait")]
    out = phase_figures((10.0, 11.0), calls, waits)
    assert out["calls"] == 2 and out["calls_on_path"] == 2
    assert out["waits_s"] == pytest.approx(0.4)
    assert out["critical_path_s"] == pytest.approx(0.4)
    assert out["ratio"] == pytest.approx(1.5)


def test_phase_without_calls_has_no_ratio() -> None:
    """A phase that calls no vendor has no critical path: its ratio is None, its wall time kept."""
    out = phase_figures((0.0, 2.0), [], [Interval(0.1, 0.5, kind="wait")])
    assert out["ratio"] is None and out["wall_s"] == 2.0


def test_runs_are_summarized_by_their_median_with_the_spread() -> None:
    """Each phase's figure is the median of its runs' ratios (one high run does not move it), with
    the lowest and highest; max_ratio is the highest median; a phase without a ratio in one run
    is summarized over the others, and one that never has a ratio stays None."""
    runs = [
        {"phases": {"detect": 1.20, "triage": 1.25, "rca": None}},
        {"phases": {"detect": 1.22, "triage": 1.45, "rca": None}},
        {"phases": {"detect": 1.50, "triage": 1.27, "rca": None, "communicate": 1.1}},
    ]
    out = summarize_runs(runs)
    assert out["phases"] == {"detect": 1.22, "triage": 1.27, "rca": None, "communicate": 1.1}
    assert out["spread"]["detect"] == [1.2, 1.5] and out["spread"]["triage"] == [1.25, 1.45]
    assert out["spread"]["rca"] is None
    assert out["max_ratio"] == 1.27
    assert summarize_runs([])["max_ratio"] is None


def test_timed_app_stamps_a_call_when_its_answer_is_sent_and_lists_the_calls() -> None:
    """A call ends when its answer's last bytes are handed over, not when the app returns (work
    after the answer would otherwise overlap the caller's next step); GET /_bench/calls lists
    every timed call, and the listing itself is not one."""
    import asyncio
    import time

    import httpx

    from runbook.bench.overhead import CALLS_PATH, TimedApp

    async def app(scope, receive, send) -> None:  # answers at once, then keeps working 0.3 s
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})
        await asyncio.sleep(0.3)

    timed = TimedApp(app)

    async def go() -> list:
        transport = httpx.ASGITransport(app=timed)
        async with httpx.AsyncClient(transport=transport, base_url="http://sandbox") as client:
            before = time.time()
            assert (await client.get("/vercel/v6/deployments")).text == "ok"
            after = time.time()
            listed = (await client.get(CALLS_PATH)).json()
        return [before, after, listed]

    before, after, listed = asyncio.run(go())
    assert len(timed.calls) == 1
    call = timed.calls[0]
    assert call.label == "/vercel/v6/deployments"
    assert before <= call.start <= call.end <= after
    assert call.end - call.start < 0.3  # stamped at the answer, before the app's 0.3 s of work
    assert listed == [[call.start, call.end, "/vercel/v6/deployments"]]
