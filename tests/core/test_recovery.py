"""Which open incidents' flow runs to launch again, from their runs' launch keys and states."""

from __future__ import annotations

import pytest

from flows.recovery import HEARTBEAT_ENV, heartbeat_env
from runbook.recovery import MAX_RELAUNCHES, RunView, decide, launch_key, launch_keys, parse_key


def _run(key: str, state: str, name: str = "") -> RunView:
    return RunView(id=f"run-{key}", key=key, state_type=state, state_name=name)


def test_launch_keys_round_trip_and_other_keys_are_not_ours() -> None:
    assert launch_key(7) == "incident-7" and launch_key(7, 2) == "incident-7-relaunch-2"
    assert launch_keys(7, 2) == ["incident-7", "incident-7-relaunch-1", "incident-7-relaunch-2"]
    assert [parse_key(k) for k in launch_keys(12, 2)] == [(12, 0), (12, 1), (12, 2)]
    for other in (None, "", "incident-", "incident-7-relaunch-", "scheduled-7", "incident-7x"):
        assert parse_key(other) is None


def test_a_crashed_run_is_relaunched_under_the_next_key_up_to_the_limit() -> None:
    """Crashed first launch: relaunch 1; crashed relaunch 1: relaunch 2; the run of another
    incident (12, whose key starts like 1's) is not taken for incident 1's."""
    first = decide(1, [_run("incident-1", "CRASHED"), _run("incident-12", "RUNNING")])
    assert (first.attempt, first.crashed_run, first.given_up) == (1, "run-incident-1", False)
    assert "relaunch 1 of 3" in first.reason
    runs = [_run("incident-1", "CRASHED"), _run("incident-1-relaunch-1", "CRASHED")]
    assert decide(1, runs).attempt == 2


def test_after_the_limit_the_incident_is_left_to_people() -> None:
    runs = [_run(launch_key(1, n), "CRASHED") for n in range(MAX_RELAUNCHES + 1)]
    d = decide(1, list(reversed(runs)))  # order does not matter: the key says the attempt
    assert d.attempt is None and d.given_up
    assert d.crashed_run == f"run-{launch_key(1, MAX_RELAUNCHES)}"
    assert "crashed 4 times" in d.reason and "by hand" in d.reason


def test_a_limit_of_zero_never_relaunches() -> None:
    """With the policy's recovery.max_relaunches at 0 the first crash leaves it to people."""
    d = decide(1, [_run("incident-1", "CRASHED")], limit=0)
    assert d.attempt is None and d.given_up and d.crashed_run == "run-incident-1"
    assert "crashed once" in d.reason and "max_relaunches is 0" in d.reason


@pytest.mark.parametrize(
    ("runs", "says"),
    [
        ([], "no launched run found"),
        ([_run("incident-1", "RUNNING")], "is running"),
        ([_run("incident-1", "CRASHED"), _run("incident-1-relaunch-1", "PAUSED")], "is paused"),
        ([_run("incident-1", "COMPLETED", "Completed")], "ended Completed"),
        ([_run("incident-1", "CANCELLED", "Cancelled")], "ended Cancelled"),
        ([_run("incident-1", "FAILED", "Failed")], "ended Failed"),
    ],
)
def test_nothing_is_launched_while_a_run_lives_or_after_one_ended_otherwise(
    runs: list[RunView], says: str
) -> None:
    """A live run is the incident's; one that completed, failed or was cancelled was ended by the
    flow or a person, not lost: no relaunch, and the reason says which."""
    d = decide(1, runs)
    assert d.attempt is None and not d.given_up and says in d.reason


def test_heartbeat_frequency_defaults_to_30_s_and_the_environment_wins() -> None:
    env: dict[str, str] = {}
    assert heartbeat_env(env) == 30 and env[HEARTBEAT_ENV] == "30"
    env = {HEARTBEAT_ENV: "60"}
    assert heartbeat_env(env) == 60 and env[HEARTBEAT_ENV] == "60"
    for bad in ("abc", "10"):
        env = {HEARTBEAT_ENV: bad}
        with pytest.raises(ValueError, match=HEARTBEAT_ENV):
            heartbeat_env(env)
        assert env == {HEARTBEAT_ENV: bad}


def test_a_run_marked_crashed_that_still_writes_to_the_ledger_is_left_alone() -> None:
    """Crashed in Prefect, but the incident's newest timeline event is younger than the
    automation's window: it may be alive (heartbeats delayed), so no second run is started; once
    the ledger has been quiet that long, it is relaunched."""
    runs = [_run("incident-1", "CRASHED")]
    waiting = decide(1, runs, quiet_s=20, quiet_for_s=90)
    assert waiting.attempt is None and not waiting.given_up and "may be alive" in waiting.reason
    assert decide(1, runs, quiet_s=95, quiet_for_s=90).attempt == 1
    assert decide(1, runs, quiet_s=None, quiet_for_s=90).attempt == 1  # no timeline at all
