"""The ingest benchmark end to end on a small load: it counts in the ledger and reports its keys."""

from __future__ import annotations

import json

import pytest

from runbook.bench.ingest import main


@pytest.mark.timeout(120)
def test_small_benchmark_reports_what_the_ledger_holds(capsys: pytest.CaptureFixture[str]) -> None:
    """A 300-alert run over 10 groups exits 0 with 10 incidents and 300 stored alerts in its JSON."""
    code = main(alerts=300, groups=10, ledger="sqlite", json_out=True, vs_alertmanager=False)
    figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0
    assert (figures["sent"], figures["incidents"], figures["stored"]) == (300, 10, 300)
    for key in ("groups", "alerts_per_s", "ack_p50_ms", "ack_p95_ms", "ack_p99_ms", "ledger"):
        assert key in figures
    assert figures["alerts_per_s"] > 0 and 0 <= figures["client_cpu_share"] < 1


@pytest.mark.timeout(120)
def test_connections_option_sets_the_concurrency(capsys: pytest.CaptureFixture[str]) -> None:
    """--connections 8: the JSON reports a concurrency of 8, and the ledger still holds everything."""
    code = main(
        alerts=200, groups=5, ledger="sqlite", json_out=True, vs_alertmanager=False, connections=8
    )
    figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0
    assert (figures["concurrency"], figures["incidents"], figures["stored"]) == (8, 5, 200)


def test_bad_arguments_exit_2() -> None:
    """An unknown ledger, fewer alerts than groups, or connections outside 2-1000 exits 2 without
    running."""
    assert main(alerts=10, groups=5, ledger="mysql", json_out=True, vs_alertmanager=False) == 2
    assert main(alerts=3, groups=5, ledger="sqlite", json_out=True, vs_alertmanager=False) == 2
    for connections in (1, 1001):
        assert (
            main(alerts=10, groups=5, ledger="sqlite", json_out=True, vs_alertmanager=False,
                 connections=connections)
            == 2
        )  # fmt: skip
