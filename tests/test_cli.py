"""The `runbook` command: help, policy, incidents, and clear one-line errors on bad input."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from runbook.cli import app
from runbook.ledger import open_ledger
from runbook.models import Alert, Severity

runner = CliRunner()


@pytest.fixture
def ledger_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'ledger.db'}"


def test_help_lists_every_command() -> None:
    """`runbook --help` names every command."""
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for name in ("policy", "sandbox", "incidents", "incident", "drill", "serve", "db", "bench"):
        assert name in result.output


def test_policy_show_prints_the_runbook_values() -> None:
    """`runbook policy show` prints severities, thresholds and the escalation chain."""
    result = runner.invoke(app, ["policy", "show"])
    assert result.exit_code == 0, result.output
    assert "Critical" in result.output
    assert "Engineering Lead" in result.output
    assert "error_rate" in result.output


def test_policy_show_prints_the_approval_timeout_and_relaunch_limit(tmp_path) -> None:
    """The approval timeout and the relaunch limit are shown as the policy file sets them."""
    f = tmp_path / "p.toml"
    f.write_text('[approvals]\ntimeout = "7m"\n[recovery]\nmax_relaunches = 0\n')
    result = runner.invoke(app, ["policy", "show", "--policy", str(f), "--json"])
    assert json.loads(result.stdout)["recovery"] == {"max_relaunches": 0}
    out = " ".join(runner.invoke(app, ["policy", "show", "--policy", str(f)]).output.split())
    assert "Approval timeout │ 7m" in out
    assert "Relaunch crashed runs │ never" in out
    default = " ".join(runner.invoke(app, ["policy", "show"]).output.split())
    assert "Relaunch crashed runs │ up to 3 times" in default


def test_policy_show_json() -> None:
    """`runbook policy show --json` is machine-readable and complete."""
    result = runner.invoke(app, ["policy", "show", "--json"])
    data = json.loads(result.stdout)
    assert set(data["severities"]) == {"P0", "P1", "P2", "P3"}


def test_bad_policy_exits_2_naming_the_field(tmp_path) -> None:
    """A policy file with a wrong value exits 2 and names the field."""
    f = tmp_path / "p.toml"
    f.write_text('[severities.P1]\nresponse_time = "soon"\n')
    for args in (["policy", "check", str(f)], ["policy", "show", "--policy", str(f)]):
        result = runner.invoke(app, args)
        assert result.exit_code == 2
        assert "severities.P1.response_time" in result.output


def test_unreachable_ledger_is_one_line() -> None:
    """An unreachable ledger URL gives one line naming host and port, not a traceback."""
    url = "postgresql+psycopg://bot:hunter2@127.0.0.1:1/runbook"
    result = runner.invoke(app, ["incidents", "--ledger", url])
    assert result.exit_code == 1
    assert "127.0.0.1:1" in result.output
    assert "hunter2" not in result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_incidents_and_show(ledger_url) -> None:
    """An incident recorded in the ledger is listed and shown, as a table and as JSON."""
    with open_ledger(ledger_url) as led:
        out = led.record_alert(
            Alert(source="generic", delivery_id="d1", dedup_key="k1", summary="db slow"),
            title="Database slow",
            severity=Severity.P1,
        )
    key = f"INC-{out.incident_id}"
    listed = runner.invoke(app, ["incidents", "--ledger", ledger_url])
    assert listed.exit_code == 0 and key in listed.output
    as_json = json.loads(
        runner.invoke(app, ["incidents", "--open", "--json", "--ledger", ledger_url]).stdout
    )
    assert [row["key"] for row in as_json] == [key]
    shown = runner.invoke(app, ["incident", "show", key, "--ledger", ledger_url])
    assert shown.exit_code == 0 and "Database slow" in shown.output
    detail = json.loads(
        runner.invoke(app, ["incident", "show", key, "--json", "--ledger", ledger_url]).stdout
    )
    assert detail["incident"]["severity"] == "P1"
    assert detail["alerts"][0]["summary"] == "db slow"


def test_show_unknown_or_malformed_incident(ledger_url) -> None:
    """An unknown incident says so (exit 1); a malformed reference is a usage error (exit 2)."""
    missing = runner.invoke(app, ["incident", "show", "INC-999", "--ledger", ledger_url])
    assert missing.exit_code == 1 and "INC-999" in missing.output
    bad = runner.invoke(app, ["incident", "show", "yesterday", "--ledger", ledger_url])
    assert bad.exit_code == 2 and "INC-<number>" in bad.output


def test_sandbox_rejects_unknown_scenario() -> None:
    """`runbook sandbox --scenario nope` lists the known scenarios and exits 2."""
    result = runner.invoke(app, ["sandbox", "--scenario", "nope"])
    assert result.exit_code == 2
    assert "bad-deploy" in result.output


def test_review_ticks_items_and_refuses_unknown_ones(ledger_url) -> None:
    """`runbook review INC-N --done postmortem --by ann` ticks the item (shown done, by ann, on the
    timeline); an unknown key lists the known ones and exits 2 changing nothing; an unknown incident
    says so and exits 1."""
    with open_ledger(ledger_url) as led:
        inc = led.declare_incident("Checkout errors", Severity.P2)
    args = ["review", inc.key, "--ledger", ledger_url]
    ticked = runner.invoke(app, [*args, "--done", "postmortem", "--by", "ann", "--json"])
    assert ticked.exit_code == 0, ticked.output
    data = json.loads(ticked.stdout)
    (item,) = [i for r in data["reviews"] for i in r["items"] if i["key"] == "postmortem"]
    assert item["done"] and item["done_by"] == "ann"
    assert sum(i["done"] for r in data["reviews"] for i in r["items"]) == 1
    bad = runner.invoke(app, [*args, "--done", "post-mortem", "--done", "rca_drafted"])
    assert (
        bad.exit_code == 2 and "post-mortem" in bad.output and "postmortem_scheduled" in bad.output
    )
    with open_ledger(ledger_url) as led:
        assert [(d.review_key, d.item_key) for d in led.review_items_done(inc.id)] == [
            ("48h", "postmortem")
        ]
        assert any(e.kind == "review_items_done" and e.actor == "ann" for e in led.timeline(inc.id))
    missing = runner.invoke(
        app, ["review", "INC-999", "--ledger", ledger_url, "--done", "postmortem"]
    )
    assert missing.exit_code == 1 and "INC-999" in missing.output


def test_report_formats_count_the_ledger(ledger_url) -> None:
    """`runbook report` counts the ledger's incidents per severity and scenario in every format, and
    a bad --since is a usage error (exit 2)."""
    with open_ledger(ledger_url) as led:
        led.declare_incident("Checkout errors", Severity.P1, scenario="bad-deploy")
        led.declare_incident("Slow queries", Severity.P2, dedup_key="db")
    as_json = runner.invoke(app, ["report", "--format", "json", "--ledger", ledger_url])
    assert as_json.exit_code == 0, as_json.output
    data = json.loads(as_json.stdout)
    assert data["incidents"] == 2 and data["by_severity"] == {"P1": 1, "P2": 1}
    assert data["by_scenario"] == {"bad-deploy": 1, "unclassified": 1}
    md = runner.invoke(
        app, ["report", "--since", "7d", "--format", "markdown", "--ledger", ledger_url]
    )
    assert md.exit_code == 0 and md.stdout.startswith("# Incident report, last 7d")
    table = runner.invoke(app, ["report", "--ledger", ledger_url])
    assert table.exit_code == 0 and "2 incident(s), 2 open" in table.output
    bad = runner.invoke(app, ["report", "--since", "lately", "--ledger", ledger_url])
    assert bad.exit_code == 2 and "not a duration" in bad.output and "1d" in bad.output


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["bench", "scale", "--incidents", "0"], "--incidents"),
        (["bench", "scale", "--workers", "0"], "--workers"),
        (["bench", "scale", "--speed", "0"], "--speed"),
        (["bench", "scale", "--run-nice", "20"], "--run-nice"),
        (["bench", "scale", "--run-nice", "-1"], "--run-nice"),
        (["bench", "ingest", "--connections", "1"], "--connections"),
        (["bench", "ingest", "--workers", "0"], "--workers"),
        (["bench", "ingest", "--workers", "17"], "--workers"),
        (["bench", "overhead", "--runs", "0"], "--runs"),
        (["bench", "overhead", "--latency", "0"], "--latency"),
    ],
)
def test_bench_bad_numbers_exit_2_naming_the_option(args: list[str], named: str) -> None:
    """A bench given an impossible count exits 2 with a message naming the option, before it
    starts a server, a worker or a load generator."""
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert named in result.output


@pytest.mark.parametrize("command", ["serve", "worker"])
def test_serve_and_worker_set_heartbeats_before_starting_runs(
    command: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`runbook serve` and `runbook worker` set a 30 s heartbeat in the environment their runs
    inherit and create the crash automation before they start anything (an environment value
    wins); a bad value exits 2 naming the variable, and nothing is started."""
    import flows.recovery as recovery
    import flows.serve
    import flows.worker

    seen: list[str | None] = []
    made: list[int] = []

    async def ensure(frequency_s: int) -> str:
        made.append(frequency_s)
        return "created"

    def start(*args: object, **kwargs: object) -> int:
        import os

        seen.append(os.environ.get(recovery.HEARTBEAT_ENV))
        return 0

    monkeypatch.setattr(recovery, "ensure_zombie_automation", ensure)
    monkeypatch.setattr(flows.serve, "main", start)
    monkeypatch.setattr(flows.worker, "main", start)
    monkeypatch.delenv(recovery.HEARTBEAT_ENV, raising=False)
    result = runner.invoke(app, [command])
    assert result.exit_code == 0, result.output
    assert (seen, made) == (["30"], [30])
    assert "heartbeat every 30 s" in result.output

    monkeypatch.setenv(recovery.HEARTBEAT_ENV, "60")
    assert runner.invoke(app, [command]).exit_code == 0
    assert (seen[-1], made[-1]) == ("60", 60)

    monkeypatch.setenv(recovery.HEARTBEAT_ENV, "5")
    bad = runner.invoke(app, [command])
    assert bad.exit_code == 2 and recovery.HEARTBEAT_ENV in bad.output
    assert len(seen) == 2  # not started


def _record_starts(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """`runbook serve` / `runbook worker` with the crash automation, the server and the worker
    stubbed: the list of what they started, in order."""
    import flows.recovery as recovery
    import flows.serve
    import flows.worker

    started: list[str] = []

    async def ensure(frequency_s: int) -> str:
        started.append("automation")
        return "created"

    monkeypatch.setattr(recovery, "ensure_zombie_automation", ensure)
    monkeypatch.setattr(flows.serve, "main", lambda *a, **k: started.append("serve") or 0)
    monkeypatch.setattr(flows.worker, "main", lambda *a, **k: started.append("worker") or 0)
    return started


@pytest.mark.parametrize("command", ["serve", "worker"])
def test_serve_and_worker_refuse_a_bad_after_mitigation_niceness(
    command: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A RUNBOOK_AFTER_MITIGATION_NICE outside 0-19 makes `runbook serve` / `runbook worker` exit 2
    naming the variable and the range, before the crash automation or any run is started."""
    from runbook.priority import ENV_NICE

    started = _record_starts(monkeypatch)
    monkeypatch.setenv(ENV_NICE, "25")
    result = runner.invoke(app, [command])
    assert result.exit_code == 2
    assert ENV_NICE in result.output and "0 (off) to 19" in result.output
    assert started == []
    monkeypatch.setenv(ENV_NICE, "5")  # a good value starts it
    assert runner.invoke(app, [command]).exit_code == 0 and started[-1] == command


@pytest.mark.parametrize(
    ("variable", "bad", "allowed", "good"),
    [
        # the shared cancellation subscription: off or on
        ("RUNBOOK_WORKER_SHARED_CANCEL_WATCH", "yes", "0 (off) to 1", "0"),
        # the niceness the worker's runs start at
        ("RUNBOOK_RUN_NICE", "20", "0 (off) to 19", "10"),
        ("RUNBOOK_RUN_NICE", "-5", "0 (off) to 19", "0"),
    ],
)
def test_worker_refuses_a_bad_worker_setting(
    variable: str, bad: str, allowed: str, good: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A setting only `runbook worker` reads, outside its range, makes it exit 2 naming the
    variable and the range, before the crash automation or the worker starts; a good value starts
    it."""
    from flows.cancel_watch import ENV_SHARED
    from runbook.forkrun import ENV_RUN_NICE

    assert variable in (ENV_SHARED, ENV_RUN_NICE)  # the names the code reads
    started = _record_starts(monkeypatch)
    monkeypatch.setenv(variable, bad)
    result = runner.invoke(app, ["worker"])
    assert result.exit_code == 2
    assert variable in result.output and allowed in result.output
    assert started == []
    monkeypatch.setenv(variable, good)
    assert runner.invoke(app, ["worker"]).exit_code == 0 and started[-1] == "worker"
