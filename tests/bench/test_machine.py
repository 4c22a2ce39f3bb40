"""runbook.bench.machine: the machine reading every bench's JSON carries."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runbook.bench import machine


def test_reading_names_the_cpus_the_load_and_a_positive_speed() -> None:
    """The reading is JSON, counts this machine's CPUs, and its speed is a positive number."""
    out = json.loads(json.dumps(machine.reading()))
    assert set(out) == {"cpus", "cpu_model", "load_1m", "python_mips"}
    assert out["cpus"] >= 1
    assert out["python_mips"] > 0
    assert isinstance(out["cpu_model"], str) and out["cpu_model"]


def test_speed_is_iterations_over_the_best_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """With a clock that advances 0.5 s per run, 1,000,000 iterations read as 2.0 million per second."""
    ticks = iter([0.0, 0.5, 10.0, 10.5, 20.0, 20.5])
    monkeypatch.setattr(machine.time, "perf_counter", lambda: next(ticks))
    assert machine.python_speed(iterations=1_000_000, runs=3) == 2.0


def test_cpu_model_reads_cpuinfo_and_falls_back_without_it(tmp_path: Path) -> None:
    """The first model name line wins; a missing file still gives a non-empty name."""
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: Test CPU 9000\nmodel name\t: other\n")
    assert machine.cpu_model(info) == "Test CPU 9000"
    assert machine.cpu_model(tmp_path / "absent")
