"""The fork server and its client (flows/forkserver.py, runbook/forkrun.py, flows/worker.py).

The server runs ``tests/flows/forkrun_probe.py`` instead of ``prefect.engine`` here (it reports what
the child was given and acts on PROBE_MODE); ``tests/bench/test_scale.py`` runs real incidents
through ``runbook worker`` and forked runs end to end.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from flows.worker import FORKRUN_COMMAND, wait_ready, worker_command, worker_env
from runbook.forkrun import ENV_SOCKET

HERE = Path(__file__).parent
ROOT = HERE.parent.parent


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PROBE_", ENV_SOCKET))}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(HERE)])
    return env | extra


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A fork server running the probe module, on a socket in tmp_path."""
    path = str(tmp_path / "sock")
    proc = subprocess.Popen(
        [sys.executable, "-m", "flows.forkserver", "--socket", path, "--module",
         "forkrun_probe", "--no-preload", "--grace", "5"],
        env=_env(), stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_ready(path, proc, timeout_s=60)
        yield path, proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(30)


def _client(path: str, *args: str, cwd: Path, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "runbook.forkrun", *args],
        env=_env(**{ENV_SOCKET: path}, **env), cwd=cwd, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip


def _waiting_client(path: str, tmp_path: Path) -> tuple[subprocess.Popen[str], int]:
    """A client whose child waits for SIGTERM; returns once the child runs, with the child's pid."""
    pidfile = tmp_path / "pid"
    client = _client(path, cwd=tmp_path, PROBE_MODE="wait", PROBE_PIDFILE=str(pidfile))
    _wait_for(lambda: pidfile.exists() and pidfile.read_text())
    return client, int(pidfile.read_text())


def _wait_for(check, timeout_s: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for whoever adopted it to reap it has ended)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def test_the_child_gets_the_clients_arguments_env_directory_and_streams(server, tmp_path) -> None:
    """What the child runs sees the client's argv, cwd and environment (Prefect's settings rebuilt
    from it), writes to the client's own stdout/stderr, and its exit code is the client's."""
    path, _ = server
    client = _client(path, "run-id", "x", cwd=tmp_path, PROBE_MODE="exit:3", PROBE_A="1",
                     PREFECT_API_URL="http://127.0.0.1:9/api")  # fmt: skip
    out, err = client.communicate(timeout=60)
    assert client.returncode == 3
    seen = json.loads(out.splitlines()[0])
    assert seen["argv"] == ["run-id", "x"]
    assert seen["cwd"] == str(tmp_path)
    assert seen["path0"] == str(tmp_path)  # imports look in the working directory first
    assert seen["env"] == {"PROBE_MODE": "exit:3", "PROBE_A": "1"}
    assert seen["api_url"] == "http://127.0.0.1:9/api"
    assert seen["pid"] != client.pid
    assert "to stderr" in err


def test_the_child_starts_at_the_niceness_its_environment_asks(server, tmp_path) -> None:
    """RUNBOOK_RUN_NICE in the client's environment (a worker's runs inherit the worker's) lowers
    the child's priority by that much; the server keeps its own; without it the child runs at the
    server's; a bad value leaves the child at the server's and says so on its stderr."""
    path, proc = server
    base = os.getpriority(os.PRIO_PROCESS, proc.pid)

    def child(**env: str) -> tuple[int, str]:
        client = _client(path, cwd=tmp_path, PROBE_MODE="exit:0", **env)
        out, err = client.communicate(timeout=60)
        assert client.returncode == 0, err
        return json.loads(out.splitlines()[0])["nice"], err

    assert child(RUNBOOK_RUN_NICE="7")[0] == min(base + 7, 19)
    assert os.getpriority(os.PRIO_PROCESS, proc.pid) == base  # the server did not move
    assert child()[0] == base
    nice, err = child(RUNBOOK_RUN_NICE="high")
    assert nice == base
    assert "RUNBOOK_RUN_NICE must be a whole number from 0 to 19, not 'high'" in err


@pytest.mark.parametrize(
    ("value", "applied"),
    [("3", 3), (" 4 ", 4), ("0", 0), ("", 0), ("25", 0), ("-2", 0), ("x", 0), ("\u00b2", 0)],
)
def test_lower_priority_raises_the_niceness_by_a_good_value_only(value: str, applied: int) -> None:
    """The client's fallback (no server: it becomes prefect.engine) applies the same setting:
    ``lower_priority`` raises this process's niceness by a whole number from 0 to 19 and returns
    it; anything else changes nothing. Run in a child process: a niceness cannot be lowered back."""
    code = (
        "import os, sys; from runbook.forkrun import lower_priority; before = os.nice(0); "
        f"got = lower_priority({{'RUNBOOK_RUN_NICE': {value!r}}}); "
        "print(got, os.nice(0) - before)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=_env(), capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    before = os.nice(0)
    assert done.stdout.split() == [str(applied), str(min(applied, 19 - before))]
    assert ("must be a whole number" in done.stderr) == (value in ("25", "-2", "x", "\u00b2"))


def test_a_signal_to_the_client_reaches_the_child(server, tmp_path) -> None:
    """SIGTERM (how a worker cancels a run) is forwarded; the child's exit code comes back."""
    path, _ = server
    client, _ = _waiting_client(path, tmp_path)
    client.send_signal(signal.SIGTERM)
    out, _ = client.communicate(timeout=30)
    assert "got SIGTERM" in out
    assert client.returncode == 7


def test_a_killed_client_takes_its_child_down(server, tmp_path) -> None:
    """A client killed outright (SIGKILL) cannot forward anything: the server ends the child."""
    path, _ = server
    client, child = _waiting_client(path, tmp_path)
    client.kill()
    client.wait(10)
    _wait_for(lambda: not _alive(child))


def test_a_bad_request_is_refused_and_the_server_keeps_serving(server, tmp_path) -> None:
    """A connection that sends no file descriptors gets an error line; the next client is served."""
    path, proc = server
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as bad:
        bad.connect(path)
        bad.sendall(b"\x00\x00\x00\x02{}")
        answer = bad.makefile("rb").readline()
    assert b"3 file descriptors" in answer
    client = _client(path, cwd=tmp_path, PROBE_MODE="exit:0")
    client.communicate(timeout=60)
    assert client.returncode == 0 and proc.poll() is None


def test_stopping_the_server_ends_its_children_and_removes_the_socket(server, tmp_path) -> None:
    """SIGTERM to the server: each running child gets SIGTERM, its client its exit code."""
    path, proc = server
    client, _ = _waiting_client(path, tmp_path)
    proc.terminate()
    assert proc.wait(30) == 0
    client.communicate(timeout=30)
    assert client.returncode == 7
    assert not Path(path).exists()


def test_a_server_that_dies_takes_its_children_down_and_their_clients_fail(
    server, tmp_path
) -> None:
    """SIGKILL to the server (it cannot clean up): each child gets SIGTERM from the kernel
    (PR_SET_PDEATHSIG) and its client exits 1, saying the server went away."""
    path, proc = server
    client, child = _waiting_client(path, tmp_path)
    proc.kill()
    proc.wait(10)
    _, err = client.communicate(timeout=30)
    assert client.returncode == 1
    assert "closed the connection before the run ended" in err
    _wait_for(lambda: not _alive(child))


def test_without_a_server_the_client_runs_prefects_engine_itself(tmp_path) -> None:
    """No server on the socket: the client says so and becomes `python -m prefect.engine` (which
    here rejects the bad flow-run id, proving it ran)."""
    client = _client(str(tmp_path / "none"), "not-a-uuid", cwd=tmp_path)
    _, err = client.communicate(timeout=120)
    assert "no fork server at" in err
    assert "Invalid flow run id" in err
    assert client.returncode == 1


def test_the_worker_finds_the_server_and_this_interpreter() -> None:
    """`runbook worker`'s prefect worker gets the socket and this installation's bin first on
    PATH, so the deployments' `python -m runbook.forkrun` is this Python."""
    env = worker_env("/run/x/sock", {"PATH": "/usr/bin"})
    assert env[ENV_SOCKET] == "/run/x/sock"
    assert env["PATH"].split(os.pathsep) == [str(Path(sys.executable).parent), "/usr/bin"]
    assert FORKRUN_COMMAND == "python -m runbook.forkrun"
    cmd = worker_command("runbook", 4, ["--name", "w1"])
    # Prefect's CLI in this interpreter, with the shared TLS context (flows/prefect_cli.py)
    assert cmd[:3] == [sys.executable, "-m", "flows.prefect_cli"]
    assert cmd[3:] == ["worker", "start", "--pool", "runbook", "--type", "process",
                       "--limit", "4", "--name", "w1"]  # fmt: skip


def test_runbook_worker_refuses_a_limit_below_one() -> None:
    """Bad input exits 2 with a sentence, before anything starts."""
    done = subprocess.run(
        [sys.executable, "-m", "runbook.cli", "worker", "--limit", "0"],
        capture_output=True, text=True, timeout=120, env=_env(),
    )  # fmt: skip
    assert done.returncode == 2
    assert "--limit must be at least 1" in done.stderr


def test_restarts_are_allowed_up_to_the_limit_within_the_window(monkeypatch) -> None:
    """Five restarts within ten minutes are allowed, a sixth is not; once the first has aged out of
    the window, one more is allowed again."""
    import flows.worker as worker

    monkeypatch.setattr(worker, "RESTART_LIMIT", 5)
    monkeypatch.setattr(worker, "RESTART_WINDOW_S", 600.0)
    restarts: list[float] = []
    assert all(worker.restart_allowed(restarts, t) for t in (0, 10, 20, 30, 40))
    assert not worker.restart_allowed(restarts, 50)
    assert worker.restart_allowed(restarts, 601)  # the one at 0 has left the window
    assert restarts == [10, 20, 30, 40, 601]


def _flaky_worker(monkeypatch, tmp_path: Path, codes: list[int]) -> Path:
    """`runbook worker`'s prefect worker replaced by a script exiting with codes[n] on its n-th start
    (the last code from then on); each start appends a line to the returned file."""
    import flows.worker as worker

    starts = tmp_path / "starts"
    script = (
        "import sys; from pathlib import Path; p = Path(sys.argv[1]); "
        "n = len(p.read_text().splitlines()) if p.exists() else 0; "
        "p.open('a').write('start\\n'); codes = [int(c) for c in sys.argv[2].split(',')]; "
        "sys.exit(codes[min(n, len(codes) - 1)])"
    )
    command = [sys.executable, "-c", script, str(starts), ",".join(map(str, codes))]
    monkeypatch.setattr(worker, "worker_command", lambda *_: command)
    monkeypatch.setattr(worker, "RESTART_DELAY_S", 0.05)
    monkeypatch.setattr(worker, "RESTART_LIMIT", 3)
    return starts


def test_a_prefect_worker_that_fails_is_started_again_and_a_clean_exit_ends(
    monkeypatch, tmp_path, capfd
) -> None:
    """Prefect's worker exits 1 twice (as on a server 500 while submitting a run): `runbook
    worker` starts it again each time and, when it then exits 0, returns 0 without another start."""
    import flows.worker as worker

    starts = _flaky_worker(monkeypatch, tmp_path, [1, 1, 0])
    assert worker.main("pool") == 0
    assert starts.read_text().splitlines() == ["start"] * 3
    err = capfd.readouterr().err
    assert err.count("prefect worker exited (1); starting it again") == 2


def test_a_prefect_worker_failing_past_the_limit_is_given_up_with_its_code(
    monkeypatch, tmp_path, capfd
) -> None:
    """A worker that keeps exiting 3 is started 1 + RESTART_LIMIT (3) times, then `runbook worker`
    gives up, says so, and returns 3."""
    import flows.worker as worker

    starts = _flaky_worker(monkeypatch, tmp_path, [3])
    assert worker.main("pool") == 3
    assert len(starts.read_text().splitlines()) == 4
    assert "giving up" in capfd.readouterr().err
