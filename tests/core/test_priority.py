"""Mitigation first: when a run's process lowers its priority after mitigation, and by how much."""

from __future__ import annotations

import pytest

from runbook.errors import ConfigError
from runbook.priority import (
    DEFAULT_NICE,
    ENV_FLOW_RUN_ID,
    ENV_NICE,
    after_mitigation_nice,
    configured_nice,
    nice_after_mitigation,
    run_nice,
)


def test_the_niceness_defaults_to_10_and_takes_0_to_19_from_the_environment() -> None:
    """Unset or blank gives the default (10); 0 (off), 5 and 19 are taken as given."""
    assert after_mitigation_nice({}) == DEFAULT_NICE == 10
    assert after_mitigation_nice({ENV_NICE: "  "}) == 10
    for raw, value in (("0", 0), ("5", 5), (" 19 ", 19)):
        assert after_mitigation_nice({ENV_NICE: raw}) == value


@pytest.mark.parametrize("raw", ["-1", "20", "high", "2.5"])
def test_a_niceness_outside_0_to_19_is_refused_naming_the_variable(raw: str) -> None:
    """Negative, above 19 or not a whole number: ConfigError naming the variable, the range and the
    value given."""
    with pytest.raises(ConfigError) as caught:
        after_mitigation_nice({ENV_NICE: raw})
    message = str(caught.value)
    assert ENV_NICE in message and "0 (off) to 19" in message and repr(raw) in message


def test_the_runs_niceness_defaults_to_0_and_refuses_what_forkrun_would_not_apply() -> None:
    """RUNBOOK_RUN_NICE: unset or blank is 0 (the worker's priority), 0-19 as given; what
    ``runbook worker`` refuses (exit 2) is what ``runbook.forkrun.lower_priority`` would ignore."""
    assert run_nice({}) == 0 and run_nice({"RUNBOOK_RUN_NICE": " "}) == 0
    assert run_nice({"RUNBOOK_RUN_NICE": "10"}) == 10 and run_nice({"RUNBOOK_RUN_NICE": "19"}) == 19
    for raw in ("-1", "20", "x", "1.5"):
        with pytest.raises(ConfigError, match="RUNBOOK_RUN_NICE must be a whole number from 0"):
            run_nice({"RUNBOOK_RUN_NICE": raw})


def test_only_a_mitigated_incident_in_a_process_started_for_its_run_lowers_it() -> None:
    """The increment applies only when all hold: mitigated, the process's environment names this
    very run (a worker or runner started it for that run), and an increment above 0."""
    own = {ENV_FLOW_RUN_ID: "run-1"}
    assert nice_after_mitigation(10, True, "run-1", own) == 10
    assert nice_after_mitigation(10, False, "run-1", own) == 0  # not mitigated: all hands
    assert nice_after_mitigation(10, True, "run-2", own) == 0  # another run's process (a drill)
    assert nice_after_mitigation(10, True, "run-1", {}) == 0  # no run's process: a CLI, a test
    assert nice_after_mitigation(10, True, None, own) == 0  # not inside a flow run
    assert nice_after_mitigation(0, True, "run-1", own) == 0  # turned off


def test_a_run_meeting_a_bad_niceness_keeps_its_priority_and_says_why() -> None:
    """Inside a run (the flow): a wrong value is not an error that stops the response; it gives 0
    (no renice) and a message naming the variable; a good value comes back without a message."""
    assert configured_nice({ENV_NICE: "7"}) == (7, None)
    assert configured_nice({}) == (10, None)
    increment, why = configured_nice({ENV_NICE: "loud"})
    assert increment == 0 and why is not None
    assert ENV_NICE in why and "keeps its priority" in why
