"""`runbook bench scale`: the pure parts (side effects from request logs, duplicates, TTM figures,
the verdict, the bench policy) on hand-made data, and one small real run (3 incidents, 2 workers) on a
`prefect server start` over PostgreSQL. No timing assertions."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tomllib
from importlib import resources
from pathlib import Path

import pytest

from runbook.bench.scale_cluster import redis_messaging_env
from runbook.bench.scale_figures import (
    bench_policy_text,
    duplicate_action_keys,
    duplicate_side_effects,
    side_effects,
    ttm_figures,
    verdict,
    world_index,
)
from runbook.policy import load_policy
from tests.conftest import PG_HOST, PG_PORT, PG_USER, _pg_connect, require_service

ROOT = Path(__file__).resolve().parents[2]
# a `prefect` given explicitly, relative to the bench's working directory (this interpreter's: the
# path --server-prefect takes is what is tested)
SERVER_PREFECT = Path(sys.executable).parent / "prefect"


def _req(
    vendor: str, method: str, path: str, status: int = 200, body: str = ""
) -> dict[str, object]:
    return {"vendor": vendor, "method": method, "path": path, "status": status, "body": body}


def test_side_effects_counts_each_kind_from_2xx_requests_only() -> None:
    """A ticket create, a PagerDuty trigger, a status-page incident and a rollback count once each;
    comments, PagerDuty resolves, reads, updates and non-2xx answers are not side effects."""
    log = [
        _req("github", "POST", "/repos/acme/web/issues", 201),
        _req("github", "POST", "/repos/acme/web/issues/1/comments", 201),
        _req("github", "POST", "/repos/acme/web/issues", 503),  # refused: nothing was created
        _req("pagerduty", "POST", "/v2/enqueue", 202, '{"event_action": "trigger"}'),
        _req("pagerduty", "POST", "/v2/enqueue", 202, '{"event_action": "resolve"}'),
        _req("statuspage", "POST", "/v1/pages/sbxpage/incidents", 201),
        _req("statuspage", "PATCH", "/v1/pages/sbxpage/incidents/abc", 200),
        _req("vercel", "GET", "/v6/deployments", 200),
        _req("vercel", "POST", "/v1/projects/prj_sandbox/rollback/dpl_good", 201),
    ]
    assert side_effects(log) == {"ticket": 1, "page": 1, "status_incident": 1, "rollback": 1}


def test_duplicates_are_the_extras_of_a_kind_per_incident_summed() -> None:
    """Two tickets for one incident and three rollbacks for another are 1 + 2 duplicates; one of
    each kind per incident is none."""
    per_incident = {
        1: {"ticket": 2, "page": 1},
        2: {"rollback": 3, "status_incident": 1},
        3: {"ticket": 1, "page": 1, "rollback": 1},
    }
    assert duplicate_side_effects(per_incident) == 3
    assert duplicate_side_effects({}) == 0


def test_duplicate_action_keys_counts_keys_done_more_than_once() -> None:
    """Ledger rows: a key done twice is one duplicate; a key planned then done, or failed and done
    under different rows, is not."""
    rows = [
        ("INC-1:rollback", "done"),
        ("INC-1:rollback", "done"),
        ("INC-2:rollback", "planned"),
        ("INC-2:rollback", "done"),
        ("INC-3:page", "failed"),
        ("INC-3:page", "done"),
    ]
    assert duplicate_action_keys(rows) == 1


def test_world_index_reads_the_bench_service_only() -> None:
    """`scale-12` is world 12; any other service is not a bench world."""
    assert world_index("scale-12") == 12
    assert world_index("web") is None
    assert world_index("scale-x") is None


def test_ttm_figures_give_percentiles_and_the_ratio_to_the_single_incident() -> None:
    """p50/p95 interpolate over the storm's TTMs; the ratio is p95 over the single TTM; no TTMs or
    no single TTM give None, not an error."""
    out = ttm_figures([10.0, 20.0, 30.0, 40.0], 10.0)
    assert out["p50_ttm_s"] == pytest.approx(25.0)
    assert out["p95_ttm_s"] == pytest.approx(38.5)
    assert out["ratio"] == pytest.approx(3.85)
    assert ttm_figures([], 5.0)["p95_ttm_s"] is None
    assert ttm_figures([1.0], None)["ratio"] is None


def test_verdict_passes_only_all_resolved_no_duplicates_within_ratio() -> None:
    """ok needs every incident resolved, no duplicate, and ratio <= 2; each failure is named."""
    good = {
        "incidents": 10,
        "resolved": 10,
        "single_resolved": True,
        "duplicate_side_effects": 0,
        "duplicate_action_keys": 0,
        "ratio": 1.9,
        "target_ratio": 2.0,
    }
    assert verdict(good) == []
    assert "9 of 10" in verdict(good | {"resolved": 9})[0]
    assert "duplicate" in verdict(good | {"duplicate_side_effects": 2})[0]
    assert "target <= 2.0x" in verdict(good | {"ratio": 2.5})[0]
    assert verdict(good | {"ratio": None})  # no figure is no pass


def test_bench_policy_keeps_the_drill_overlay_and_drops_the_rollback_interval(tmp_path) -> None:
    """The bench's policy parses; approvals of the default policy run automatically as in a drill,
    "never" stays never, rollbacks have no minimum interval per target, and the watch for recurrence
    after mitigation is the bench's 2 min (the default's 15 min otherwise); the rest of the
    monitoring section keeps the defaults."""
    default = resources.files("runbook").joinpath("default_policy.toml").read_text("utf-8")
    actions = tomllib.loads(default)["actions"]
    path = tmp_path / "policy.toml"
    path.write_text(bench_policy_text(actions))
    policy = load_policy(path)
    rollback = policy.actions["rollback_deployment"]
    assert rollback.min_interval.total_seconds() == 0
    assert rollback.P2 == "auto" and rollback.P3 == "never"
    assert policy.actions["terminate_backends"].min_interval.total_seconds() > 0
    assert policy.monitoring.recurrence_watch.total_seconds() == 120
    assert load_policy(None).monitoring.recurrence_watch.total_seconds() == 15 * 60
    assert policy.monitoring.auto_resolve_after == load_policy(None).monitoring.auto_resolve_after


def test_the_servers_pool_is_sized_for_a_storm_and_the_environment_wins() -> None:
    """The bench's Prefect server gets a pool of 20 + 40 connections with a 120 s wait, unless the
    environment sets one of them: that value is kept (the rest of PREFECT_* is not passed on)."""
    from runbook.bench.scale_cluster import server_pool_env

    assert server_pool_env({}) == {
        "PREFECT_SERVER_DATABASE_SQLALCHEMY_POOL_SIZE": "20",
        "PREFECT_SERVER_DATABASE_SQLALCHEMY_MAX_OVERFLOW": "40",
        "PREFECT_SERVER_DATABASE_SQLALCHEMY_POOL_TIMEOUT": "120",
    }
    env = server_pool_env({"PREFECT_SERVER_DATABASE_SQLALCHEMY_POOL_SIZE": "7", "OTHER": "x"})
    assert env["PREFECT_SERVER_DATABASE_SQLALCHEMY_POOL_SIZE"] == "7"
    assert env["PREFECT_SERVER_DATABASE_SQLALCHEMY_MAX_OVERFLOW"] == "40" and "OTHER" not in env


def test_the_task_run_batching_of_the_bench_server_yields_to_the_environment() -> None:
    """The README says a task-run recorder setting in the environment wins over the project's
    batching on every server it starts: bench scale's too (it passes no PREFECT_* on by itself)."""
    from runbook.bench.scale_cluster import env_or_default
    from runbook.prefect_server import SERVER_DEFAULTS

    batch = "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_BATCH_SIZE"
    assert env_or_default(SERVER_DEFAULTS, {}) == SERVER_DEFAULTS
    assert env_or_default(SERVER_DEFAULTS, {batch: "1"})[batch] == "1"


def test_a_database_that_cannot_be_created_is_reported_with_postgresqls_reason() -> None:
    """No PostgreSQL where the bench looks: the error names it and says what PostgreSQL answered."""
    import runbook.bench.scale_cluster as cluster

    dsn = "host=127.0.0.1 port=1 user=postgres dbname=postgres"
    with pytest.raises(RuntimeError) as caught:
        cluster.create_db("runbook_scale_test", dsn)
    message = str(caught.value)
    assert f"({dsn})" in message and "creating a database failed: " in message
    assert "port 1" in message or "refused" in message.lower()


@pytest.mark.postgres
@pytest.mark.timeout(300)
def test_redis_settings_put_messaging_on_the_database_and_background_tasks_on_the_next() -> None:
    """`--redis redis://host:port/N`: Prefect's messaging, cache, ordering and lease storage on
    Redis database N, docket's background tasks on N+1."""
    env = redis_messaging_env("redis://127.0.0.1:6379/13")
    assert env["PREFECT_MESSAGING_BROKER"] == "prefect_redis.messaging"
    assert env["PREFECT_MESSAGING_CACHE"] == "prefect_redis.messaging"
    assert env["PREFECT_SERVER_EVENTS_CAUSAL_ORDERING"] == "prefect_redis.ordering"
    assert env["PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE"] == "prefect_redis.lease_storage"
    assert env["PREFECT_REDIS_MESSAGING_URL"] == "redis://127.0.0.1:6379/13"
    assert env["PREFECT_SERVER_DOCKET_URL"] == "redis://127.0.0.1:6379/14"
    assert redis_messaging_env("redis://cache.internal:6380")["PREFECT_SERVER_DOCKET_URL"] == (
        "redis://cache.internal:6380/1"
    )


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:6379/1", "redis://127.0.0.1:6379/15", "redis:///3", "redis://h/x"]
)
def test_a_redis_url_that_cannot_serve_is_refused_with_the_form_to_use(url: str) -> None:
    """Not redis://, no host, a database that is not a number or leaves no next one: refused."""
    with pytest.raises(ValueError, match=r"--redis must look like redis://127\.0\.0\.1:6379/13"):
        redis_messaging_env(url)


def test_a_refused_redis_url_does_not_show_its_password() -> None:
    """The message names the URL given, its password masked."""
    with pytest.raises(ValueError) as refused:
        redis_messaging_env("redis://bot:s3cr3t-sentinel@cache.internal:6379/99")
    assert "s3cr3t-sentinel" not in str(refused.value)
    assert "redis://bot:***@cache.internal:6379/99" in str(refused.value)


@pytest.mark.parametrize(
    ("option", "value", "says"),
    [
        ("--redis", "http://127.0.0.1/1", "--redis must look like redis://127.0.0.1:6379/13"),
        ("--server-prefect", "/no/such", "--server-prefect /no/such: not an executable file"),
    ],
    ids=["bad-redis-url", "server-prefect-not-an-executable"],
)
def test_the_cli_refuses_a_bad_option_before_starting_anything(
    tmp_path, option: str, value: str, says: str
) -> None:
    """`runbook bench scale --redis http://...` (the form to use) or `--server-prefect /no/such`
    (naming the path) exits 2 with that message; no bench folder."""
    env = dict(os.environ, RUNBOOK_HOME=str(tmp_path))
    done = subprocess.run(
        [sys.executable, "-m", "runbook.cli", "bench", "scale", option, value],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert says in done.stderr
    assert not (tmp_path / "bench").exists()


def _redis_or_require() -> None:
    import redis

    try:
        redis.Redis.from_url("redis://127.0.0.1:6379/0", socket_timeout=3).ping()
    except redis.RedisError as exc:
        require_service("Redis", f"127.0.0.1:6379: {exc}")


@pytest.mark.parametrize("split", [False, True], ids=["one-server-process", "api-services-redis"])
def test_small_storm_on_a_real_server_and_two_workers(tmp_path, split: bool) -> None:
    """`runbook bench scale --incidents 3 --workers 2 --json`: a real `prefect server start` on
    PostgreSQL, two process workers, the gateway; all 3 incidents resolve and no side effect
    happens twice (the timing ratio is not asserted), and each incident's path is in incidents.json.
    With `--redis` the same holds with the server as an API process and a services process talking
    through Redis (production's layout), both run from the `prefect` given by `--server-prefect`,
    and `--run-nice 5` starts every run at niceness 5 (a mitigated incident's run then stands at
    15)."""
    try:
        with _pg_connect() as conn:
            conn.execute("SELECT 1")
    except Exception as exc:  # noqa: BLE001 - any failure means "not available"
        require_service("PostgreSQL", f"{PG_HOST}:{PG_PORT} as {PG_USER}: {exc}")
    if split:
        _redis_or_require()
    env = dict(os.environ, RUNBOOK_HOME=str(tmp_path))
    done = subprocess.run(
        [sys.executable, "-m", "runbook.cli", "bench", "scale", "--incidents", "3",
         "--workers", "2", "--json",
         *(["--redis", "redis://127.0.0.1:6379/11",
            "--server-prefect", os.path.relpath(SERVER_PREFECT, ROOT), "--run-nice", "5"]
           if split else [])],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=280,
    )  # fmt: skip
    assert done.stdout.strip(), done.stderr[-3000:]
    out = json.loads(done.stdout)
    assert out["server_db"] == "postgresql"
    assert out["server_processes"] == ("api + services, Redis messaging" if split else "one")
    if split:  # the services process ran beside the API, without an error in its log
        services_log = (Path(out["folder"]) / "services.log").read_text()
        assert "Starting services" in services_log
        assert "Traceback" not in services_log
    assert out["incidents"] == 3 and out["resolved"] == 3, out
    assert out["single_resolved"], out
    assert out["duplicate_side_effects"] == 0 and out["duplicate_action_keys"] == 0, out
    assert out["workers"] == 2
    assert out["run_nice"] == (5 if split else 0)
    assert out["server_python"] == platform.python_version()
    paths = json.loads((Path(out["folder"]) / "incidents.json").read_text())
    assert len(paths["single"]) == 1 and len(paths["storm"]) == 3
    for row in paths["storm"]:  # each mitigated after its run started, after its run was made
        assert 0 <= row["run_created_s"] <= row["run_running_s"] <= row["ttm_s"], row
        assert row["phases"]["detect"][0] >= row["run_running_s"], row
        # each run, alone in a process a worker started for it at niceness --run-nice, yielded
        # the CPU once mitigated: its niceness is then that plus 10 (over this test's own)
        assert row["nice_after_mitigation"] == min(os.nice(0) + (15 if split else 10), 19), row


def test_an_incident_row_gives_its_runs_and_phases_in_seconds_from_detection() -> None:
    """incidents.json's row: the run's creation and start and each phase's window are seconds after
    the incident's detection; an incident without a run or a phase without an end gives None."""
    from datetime import UTC, datetime, timedelta
    from types import SimpleNamespace

    from runbook.bench.scale_figures import incident_row
    from runbook.models import Phase
    from runbook.timings import PhaseTiming, Timings

    t0 = datetime(2026, 11, 28, 6, 0, tzinfo=UTC)
    at = lambda s: t0 + timedelta(seconds=s)  # noqa: E731
    timings = Timings(
        detected_at=t0,
        mitigated_at=at(150.5),
        ttm_s=150.5,
        phases=[
            PhaseTiming(phase=Phase.DETECT, started_at=at(20), ended_at=at(31.254)),
            PhaseTiming(phase=Phase.TRIAGE, started_at=at(33)),
        ],
    )
    run = SimpleNamespace(created=at(0.5), start_time=at(14.25))
    row = incident_row(7, 42, timings, run)
    assert row == {
        "world": 7,
        "incident": 42,
        "run_created_s": 0.5,
        "run_running_s": 14.25,
        "phases": {"detect": [20.0, 31.25], "triage": [33.0, None]},
        "ttm_s": 150.5,
        "nice_after_mitigation": None,
    }
    assert incident_row(7, 42, timings, run, 10)["nice_after_mitigation"] == 10
    no_run = incident_row(7, 42, timings, None)
    assert no_run["run_created_s"] is None and no_run["run_running_s"] is None
    assert (
        incident_row(7, 42, timings, SimpleNamespace(created=at(1), start_time=None))[
            "run_running_s"
        ]
        is None
    )


def test_a_server_installation_must_be_an_executable_with_this_prefect(tmp_path) -> None:
    """--server-prefect: a missing file, or an executable with no Python importing prefect next to
    it, is refused saying what to install; this interpreter's own prefect is accepted with its
    Python and Prefect versions."""
    import platform

    import prefect

    from runbook.bench.scale_cluster import server_installation

    with pytest.raises(ValueError, match="not an executable file"):
        server_installation(tmp_path / "prefect")
    fake = tmp_path / "bin" / "prefect"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    with pytest.raises(ValueError, match=f"prefect=={prefect.__version__}"):
        server_installation(fake)
    ours = server_installation(Path(sys.executable).parent / "prefect")
    assert ours == {"python": platform.python_version(), "prefect": prefect.__version__}


def test_a_server_installation_without_prefect_redis_is_refused_for_redis(tmp_path) -> None:
    """--server-prefect with --redis: an installation of this Prefect release but without
    prefect-redis is refused, saying the pip command that installs it there; without --redis the
    same installation is accepted."""
    import prefect

    from runbook.bench.scale_cluster import server_installation

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in (
        ("prefect", "#!/bin/sh\n"),
        # the probe's answer of a Python 3.13 with this Prefect and no prefect_redis
        ("python", f"#!/bin/sh\necho 3.13.0 {prefect.__version__} 0\n"),
    ):
        (bin_dir / name).write_text(body)
        (bin_dir / name).chmod(0o755)
    assert server_installation(bin_dir / "prefect") == {
        "python": "3.13.0",
        "prefect": prefect.__version__,
    }
    with pytest.raises(ValueError, match=r"needs prefect-redis .* -m pip install 'prefect-redis"):
        server_installation(bin_dir / "prefect", needs_redis=True)


def _processes_in(folder: Path) -> list[str]:
    """The processes whose working directory is ``folder`` (the bench starts its server, services
    and workers there): their pid and command line."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if Path(os.readlink(f"/proc/{pid}/cwd")) == folder:
                found.append(
                    f"{pid} {Path(f'/proc/{pid}/cmdline').read_text().replace(chr(0), ' ')}"
                )
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return found


def test_sigterm_stops_everything_the_bench_started(tmp_path) -> None:
    """SIGTERM to `runbook bench scale` once its server and workers run: it exits 143 saying so,
    and nothing it started is left: no process in its folder, its private PostgreSQL cluster
    removed. (The default SIGTERM left the server, the services, the workers and the cluster
    running, each in its own session.)"""
    import signal
    import time

    try:
        with _pg_connect() as conn:
            conn.execute("SELECT 1")
    except Exception as exc:  # noqa: BLE001 - any failure means "not available"
        require_service("PostgreSQL", f"{PG_HOST}:{PG_PORT} as {PG_USER}: {exc}")
    clusters_before = set(Path("/tmp").glob("runbook-pg-*"))
    env = dict(os.environ, RUNBOOK_HOME=str(tmp_path))
    bench = subprocess.Popen(
        [sys.executable, "-m", "runbook.cli", "bench", "scale", "--incidents", "3", "--json"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        folder = None
        while time.monotonic() < deadline and bench.poll() is None:
            logs = list((tmp_path / "bench").glob("scale-*/worker-1.log"))
            if logs:
                folder = logs[0].parent
                if _processes_in(folder) and (folder / "worker-1.log").stat().st_size:
                    break
            time.sleep(0.5)
        assert folder is not None and bench.poll() is None, "the bench did not get its workers up"
        assert _processes_in(folder)  # what SIGTERM must stop
        bench.send_signal(signal.SIGTERM)
        _, stderr = bench.communicate(timeout=120)
    finally:
        if bench.poll() is None:
            bench.kill()
    assert bench.returncode == 128 + signal.SIGTERM, stderr[-3000:]
    assert "terminated; everything it started is stopped" in stderr
    assert _processes_in(folder) == []
    assert set(Path("/tmp").glob("runbook-pg-*")) <= clusters_before
