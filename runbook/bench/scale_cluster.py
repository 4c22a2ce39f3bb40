"""The processes of ``runbook bench scale``: a Prefect server on PostgreSQL, a process work pool and
its workers, the deployment, and the router serving every sandbox world from one port
(``runbook/bench/scale.py`` has the method)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from runbook.bench.latency import ADMIN_DSN
from runbook.ledger.engine import ENV_MAX_OVERFLOW, ENV_POOL_SIZE
from runbook.ledger.url import describe_url
from runbook.ports import free_port
from runbook.prefect_server import SERVER_DEFAULTS

# --- the setup ------------------------------------------------------------------------------------


class WorldRouter:
    """One ASGI app serving many sandbox worlds: ``/w<k>/<vendor>/...`` goes to world ``k``."""

    def __init__(self) -> None:
        self.apps: dict[str, Any] = {}

    def add(self, k: int, app: Any) -> str:
        self.apps[f"w{k}"] = app
        return f"/w{k}"

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            head, _, rest = scope["path"].lstrip("/").partition("/")
            app = self.apps.get(head)
            if app is not None:
                scope = dict(scope, path="/" + rest, raw_path=("/" + rest).encode())
                await app(scope, receive, send)
                return
            await send({"type": "http.response.start", "status": 404, "headers": []})
            await send({"type": "http.response.body", "body": b"no such world"})


@dataclass
class Setup:
    """Everything the bench started (stopped by ``teardown``, in reverse order)."""

    folder: Path
    speed: float
    forked: bool = True  # `runbook worker` and forkrun runs; False: plain `prefect worker start`
    # the server as an API process and a services process over Redis messaging (None: one process)
    redis_url: str | None = None
    # the `prefect` executable the server's processes run (None: this interpreter's); another
    # installation, e.g. on Python 3.13, where Prefect's datetimes are the standard library's
    server_prefect: Path | None = None
    # the niceness the workers' runs start at (RUNBOOK_RUN_NICE; applied to forked runs)
    run_nice: int = 0
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    servers: list[Any] = field(default_factory=list)
    worlds: dict[int, Any] = field(default_factory=dict)
    router: WorldRouter = field(default_factory=WorldRouter)
    sandbox_url: str = ""
    api_url: str = ""
    ledger_url: str = ""
    ledger: Any = None
    token: str = field(default_factory=lambda: secrets.token_urlsafe(24), repr=False)

    @property
    def policy_path(self) -> Path:
        return self.folder / "policy.toml"


def create_db(prefix: str, admin_dsn: str = ADMIN_DSN) -> str:
    """A fresh database on ``admin_dsn``'s server; its name.

    Raises:
        RuntimeError: PostgreSQL refused, with its reason.
    """
    from runbook.bench.latency import _create_pg_database

    errors: list[str] = []
    name = _create_pg_database(admin_dsn, prefix, errors)
    if name is None:
        raise RuntimeError(
            f"bench scale needs a PostgreSQL ({admin_dsn}) for the Prefect server and the "
            f"ledger; creating a database failed: {errors[0]}"
        )
    return name


# The Prefect server's database pool. Prefect's default (5 + 10 overflow, 30 s wait) ran dry when
# 100 runs started at once: a 500 on the worker's read of the deployment, and `prefect worker start`
# exits on an error there, its runs with it. The README's production commands set the same.
SERVER_POOL = {
    "PREFECT_SERVER_DATABASE_SQLALCHEMY_POOL_SIZE": "20",
    "PREFECT_SERVER_DATABASE_SQLALCHEMY_MAX_OVERFLOW": "40",
    "PREFECT_SERVER_DATABASE_SQLALCHEMY_POOL_TIMEOUT": "120",
}


def env_or_default(defaults: Mapping[str, str], environ: Mapping[str, str]) -> dict[str, str]:
    """``defaults``, each value taken from ``environ`` where it is set there (``_env`` passes no
    PREFECT_* variable on, so a value set for the bench would otherwise reach the server as nothing)."""
    return {k: environ.get(k, v) for k, v in defaults.items()}


def server_pool_env(environ: Mapping[str, str]) -> dict[str, str]:
    """``SERVER_POOL``, each value taken from ``environ`` where it is set there."""
    return env_or_default(SERVER_POOL, environ)


def _env(setup: Setup, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "RUNBOOK_"))}
    return env | {
        "PREFECT_HOME": str(setup.folder / "prefect-home"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "PYTHONUNBUFFERED": "1",
        **({"PREFECT_API_URL": setup.api_url} if setup.api_url else {}),
        **extra,
    }


def _spawn(
    setup: Setup,
    args: list[str],
    log: str,
    env: dict[str, str],
    program: str = "prefect",
    executable: Path | None = None,
) -> subprocess.Popen[bytes]:
    exe = executable or Path(sys.executable).parent / program
    with (setup.folder / log).open("wb") as out:
        proc = subprocess.Popen(  # noqa: S603 - a prefect/runbook executable, our arguments
            [str(exe), *args],
            env=env,
            cwd=setup.folder,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: stopped with everything it started
        )
    setup.procs.append(proc)
    return proc


def stop_all(procs: Sequence[subprocess.Popen[bytes]], timeout: float = 15) -> None:
    """SIGTERM each process group, wait for all within one timeout, SIGKILL what is left."""
    for proc in procs:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for proc in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(max(0.1, deadline - time.monotonic()))
        with contextlib.suppress(ProcessLookupError):  # and whatever is left of its group
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)


def redis_messaging_env(url: str) -> dict[str, str]:
    """The settings that put a Prefect server's messaging, cache, causal ordering, lease storage
    and background tasks on Redis (prefect-redis), as the README's production layout does:
    messaging on ``url``'s database, background tasks (docket) on the next one.

    Raises:
        ValueError: ``url`` is not a ``redis://`` URL with a database number below 15.
    """
    parts = urlsplit(url)
    db = parts.path.strip("/") or "0"
    if parts.scheme != "redis" or not parts.hostname or not db.isdigit() or int(db) > 14:
        raise ValueError(
            f"--redis must look like redis://127.0.0.1:6379/13 (a database number 0-14: the "
            f"next one holds Prefect's background tasks), not {describe_url(url)!r}"
        )
    base = f"redis://{parts.netloc}"
    return {
        "PREFECT_MESSAGING_BROKER": "prefect_redis.messaging",
        "PREFECT_MESSAGING_CACHE": "prefect_redis.messaging",
        "PREFECT_SERVER_EVENTS_CAUSAL_ORDERING": "prefect_redis.ordering",
        "PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE": "prefect_redis.lease_storage",
        "PREFECT_REDIS_MESSAGING_URL": f"{base}/{db}",
        "PREFECT_SERVER_DOCKET_URL": f"{base}/{int(db) + 1}",
    }


def flush_redis(env: Mapping[str, str]) -> None:
    """Empty the two Redis databases ``redis_messaging_env`` names: a stream or consumer group
    left by an earlier run would hand its messages to this one's server."""
    import redis

    for name in ("PREFECT_REDIS_MESSAGING_URL", "PREFECT_SERVER_DOCKET_URL"):
        try:
            with redis.Redis.from_url(env[name], socket_timeout=5) as client:
                client.flushdb()
        except redis.RedisError as exc:
            raise RuntimeError(
                f"Redis at {describe_url(env[name])} does not answer: {exc}"
            ) from None


def start_server(setup: Setup, admin_dsn: str = ADMIN_DSN) -> None:
    """``prefect server start`` on a fresh database of ``admin_dsn``'s PostgreSQL, its connection
    pool sized for a storm (``SERVER_POOL``); returns once /api/health answers.

    With ``setup.redis_url`` the server is two processes, as in production: the API
    (``prefect server start --no-services``, which still streams events to websockets) and
    ``prefect server services start`` (the event persister, the task-run recorder, triggers and
    actions...), their messages through Redis."""
    from runbook.bench.latency import _asyncpg_url

    redis_env = redis_messaging_env(setup.redis_url) if setup.redis_url else {}
    if redis_env:
        flush_redis(redis_env)
    db = create_db("runbook_scale_prefect", admin_dsn)
    port = free_port()
    env = _env(
        setup,
        PREFECT_SERVER_DATABASE_CONNECTION_URL=_asyncpg_url(admin_dsn, db),
        **server_pool_env(os.environ),
        PREFECT_UI_ENABLED="false",
        PREFECT_SERVER_LOGGING_LEVEL="WARNING",
        PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED="false",  # no scheduled deployments here
        # task runs recorded in batches, as the README recommends; a value set here wins
        **env_or_default(SERVER_DEFAULTS, os.environ),
        **redis_env,
    )
    args = ["server", "start", "--host", "127.0.0.1", "--port", str(port)]
    exe = setup.server_prefect
    proc = _spawn(
        setup, args + (["--no-services"] if redis_env else []), "server.log", env, executable=exe
    )
    api = f"http://127.0.0.1:{port}/api"
    _wait_healthy(setup, proc, api)
    if redis_env:  # the API has migrated the database: the services may start
        _spawn(setup, ["server", "services", "start"], "services.log", env, executable=exe)


def _wait_healthy(setup: Setup, proc: subprocess.Popen[bytes], api: str) -> None:
    """Return once ``api``/health answers (``setup.api_url`` set); raise if ``proc`` exits or
    180 s pass."""
    import httpx

    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"prefect server start exited ({setup.folder / 'server.log'})")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{api}/health", timeout=2).status_code == 200:
                setup.api_url = api
                return
        time.sleep(0.3)
    raise RuntimeError(f"prefect server start did not answer in 180 s ({setup.folder})")


def start_workers(setup: Setup, workers: int, limit: int) -> str:
    """The process pool, the incident deployment on it, and the workers; the pool's name."""
    pool = f"scale-{uuid.uuid4().hex[:6]}"
    env = _env(setup, PREFECT_CLI_PROMPT="false")
    made = subprocess.run(  # noqa: S603
        [str(Path(sys.executable).parent / "prefect"), "work-pool", "create", pool,
         "--type", "process"],
        env=env, cwd=setup.folder, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    if made.returncode != 0:
        raise RuntimeError(f"prefect work-pool create failed: {made.stderr[-500:]}")
    _deploy(pool, setup.forked)
    worker_env = _env(
        setup,
        RUNBOOK_HOME=str(setup.folder),
        RUNBOOK_LEDGER_URL=setup.ledger_url,
        RUNBOOK_POLICY=str(setup.policy_path),
        PREFECT_WORKER_QUERY_SECONDS="1",  # default 10 s: a storm's runs would wait for the poll
        PREFECT_LOGGING_LEVEL="WARNING",
        RUNBOOK_RUN_NICE=str(setup.run_nice),
        # the runs' ledger pools, when the bench's environment sizes them (see its docstring)
        **{k: os.environ[k] for k in (ENV_POOL_SIZE, ENV_MAX_OVERFLOW) if k in os.environ},
    )
    # `runbook worker` (a fork server next to `prefect worker start`), or plain `prefect worker start`
    program, command = ("runbook", ["worker"]) if setup.forked else ("prefect", ["worker", "start"])
    for i in range(workers):
        args = [*command, "--pool", pool, "--limit", str(limit), "--name", f"{pool}-w{i}"]
        _spawn(setup, args, f"worker-{i}.log", worker_env, program)
    asyncio.run(_wait_workers(setup, pool, workers))
    return pool


def _deploy(pool: str, forked: bool) -> None:
    from prefect.deployments.runner import EntrypointType

    from flows.incident import incident_response
    from flows.worker import FORKRUN_COMMAND

    dep = incident_response.to_deployment(  # type: ignore[call-arg]
        name="runbook",
        work_pool_name=pool,
        entrypoint_type=EntrypointType.MODULE_PATH,
        tags=["runbook", "incident", "bench-scale"],
        job_variables={"command": FORKRUN_COMMAND} if forked else {},
        _sync=True,
    )
    dep.apply(work_pool_name=pool, _sync=True)  # type: ignore[call-arg, union-attr]


async def _wait_workers(setup: Setup, pool: str, count: int) -> None:
    from prefect.client.orchestration import get_client

    deadline = time.monotonic() + 120
    async with get_client() as client:
        while time.monotonic() < deadline:
            if any(p.poll() is not None for p in setup.procs):
                raise RuntimeError(f"a worker or the server exited; logs in {setup.folder}")
            seen = await client.read_workers_for_work_pool(pool)
            if sum(w.status.value == "ONLINE" for w in seen) >= count:
                return
            await asyncio.sleep(0.5)
    raise RuntimeError(f"{count} workers did not come online within 120 s ({setup.folder})")


def server_installation(prefect_exe: Path, needs_redis: bool = False) -> dict[str, str]:
    """The Python and Prefect versions of another installation's ``prefect`` executable (for
    ``--server-prefect``); its Prefect must be this one's release, as the server and its clients
    are in production, and with ``needs_redis`` (``--redis``) it must have prefect-redis.

    Raises:
        ValueError: not an executable, no Python next to it that imports prefect, another
            Prefect release, or no prefect-redis when needed; the message says what to install.
    """
    import prefect

    if not prefect_exe.is_file() or not os.access(prefect_exe, os.X_OK):
        raise ValueError(f"--server-prefect {prefect_exe}: not an executable file")
    python = prefect_exe.parent / "python"
    probe = (
        "import importlib.util, platform, prefect; print(platform.python_version(), "
        "prefect.__version__, int(importlib.util.find_spec('prefect_redis') is not None))"
    )
    try:
        found = subprocess.run(  # noqa: S603 - the interpreter next to the given executable
            [str(python), "-c", probe], capture_output=True, text=True, timeout=120, check=True
        ).stdout.split()
    except (OSError, subprocess.SubprocessError):
        found = []
    if len(found) != 3:
        raise ValueError(
            f"--server-prefect {prefect_exe}: {python} does not import prefect; give the `prefect` "
            f"of a virtual environment with prefect=={prefect.__version__} (and prefect-redis for "
            "--redis) installed"
        )
    if found[1] != prefect.__version__:
        raise ValueError(
            f"--server-prefect {prefect_exe} has Prefect {found[1]}; install "
            f"prefect=={prefect.__version__} there (the server and its clients are one release)"
        )
    if needs_redis and found[2] != "1":
        raise ValueError(
            f"--server-prefect {prefect_exe}: --redis needs prefect-redis in that installation; "
            f"install it there: {python} -m pip install 'prefect-redis>=0.2.15,<0.3'"
        )
    return {"python": found[0], "prefect": found[1]}
