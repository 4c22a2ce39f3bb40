"""Benchmark: a storm of distinct incidents on a real Prefect server on PostgreSQL with process workers.

The layout is the production one, on one machine, everything fresh and private to the run:

1. ``prefect server start`` (a subprocess, UI off) on a fresh PostgreSQL database;
2. a ``process`` work pool and ``--workers`` separate ``runbook worker --pool P --limit L``
   processes (see Workers below); the ``incident-response/runbook`` deployment is registered on that
   pool (module entrypoint, so a run imports the installed project wherever the worker runs it), and
   every flow run is a process of one of the workers;
3. the ledger on another PostgreSQL database, shared by the gateway (this process) and the flow
   runs (``RUNBOOK_LEDGER_URL``; no password in it, trust auth). Both databases are on a private
   cluster the bench starts (``runbook.bench.pg_cluster``, ``max_connections`` 1000) and removes:
   every run process keeps its own ledger pool and the server a pool of 20 + 40, which a storm with
   a run per incident at once would not find on a shared server's 100 slots;
4. the alert gateway in this process (uvicorn in a thread) with a bearer token, and its outbox
   dispatcher launching runs exactly as ``PrefectLauncher`` does (a run of the deployment with
   the idempotency key ``incident-<id>``, its id looked up once), plus the run's ``options``.

**One world per incident.** A hundred DISTINCT incidents must each be mitigated and resolved, and
one sandbox world with one bad deploy cannot give that: the first rollback heals it and every later
incident's triage finds nothing to do. So each incident ``k`` has its own world (its own bad
deploy, its own Vercel/GitHub/PagerDuty/Statuspage/Slack state and request log) and its own blocks
named ``scale-<k>``. The worlds are NOT a hundred uvicorn servers: each is a plain ``World`` object,
and ONE server (one thread, one port) routes ``/w<k>/...`` to world ``k``'s app. A hundred uvicorn
threads would each wake ten times a second to check for shutdown and fight over the GIL with the
gateway; a World costs a few kilobytes.

**The alerts.** The bad deploy is injected in every world; each world's app metrics are scraped
like the drill's alerting rules do (``runbook.drill.alerting``), and the firing rules become one
Alertmanager notification per world with ``service="scale-<k>"``, so its ``groupKey`` (the dedup
key) differs and each opens its own incident. The storm POSTs them all at once to
``/hooks/alertmanager``. The gateway answers before its dispatcher launches, so the launcher does
not rely on the answer: it reads the incident's service from the ledger and passes that world's
``systems`` (``drill_systems("scale-<k>")``) and ``speed`` in the run's options. The policy is the
drill's (approvals run on their own) with one change: no minimum interval between two rollbacks of
the same Vercel project, because every world's project has the sandbox's one id, where a real storm
of distinct incidents would roll back distinct projects (``bench_policy_text``).

**What is checked.** Every incident resolved (its flow run final, ``resolved_at`` set). No side
effect twice: per world, from its request log (2xx only), tickets created (GitHub ``POST
.../issues``), PagerDuty trigger events, status-page incidents created, Vercel rollbacks and
promotes; more than one of a kind in one world counts the extras. And in the ledger, no
idempotency key with two ``done`` actions (the schema makes keys unique, so this guards the
check itself). TTM per incident is ``runbook.timings``'s ``ttm_s`` (from detection, i.e. the
gateway storing the alert, to ``mitigated_at``). The single-incident TTM is measured first, alone,
on the same server, workers and gateway, then the storm runs.

**Workers.** By default each worker is ``runbook worker``: ``prefect worker start`` next to a fork
server that has imported prefect and the flows, and the deployment's job variable ``command`` is
``python -m runbook.forkrun``, so a run is a fork (``flows/forkserver.py``). ``--no-fork`` runs plain
``prefect worker start`` with Prefect's own command: a workspace supervisor process that execs ``python
-m prefect.engine``, importing prefect twice (~6 s of CPU per run on this machine).

**Worker limit and speed.** ``--limit`` (default 5 per worker, so 10 runs at once) keeps the machine
busy while runs wait on the policy's compressed pauses at ``--speed 100``, and queues the rest in
Prefect, which is the honest picture of a storm larger than the fleet. At ``--speed 1`` (production
timing: a minute and a half of metric windows before a mitigation is verified, and the watch after
it) runs hold their slot for minutes, so a storm needs a slot per incident (``--limit 50`` with two
workers for 100). The policy's watch for recurrence is 2 min instead of 15 (``bench_policy_text``):
it comes after ``mitigated_at``. The review deployment is not registered: the reminders it would
run (+24 h at 100x is 14 min later) are not part of the storm.

**The server's processes.** By default ``prefect server start`` is one process: its API, the
websockets' event stream and the services (event persister, task-run recorder, triggers...) share
one interpreter, and in a storm at production timing that process is the one on a core of its own.
``--redis redis://host:port/N`` runs it as production does with several replicas: ``prefect server
start --no-services`` (the API and the event stream) and ``prefect server services start``, their
messages, cache, causal ordering and lease storage through Redis database N and the background tasks
(docket) through N+1 (``scale_cluster.redis_messaging_env``); both databases are emptied first.

**The server's installation.** ``--server-prefect PATH`` runs the server's processes from another
installation's ``prefect`` of the same Prefect release (``make server-venv``: Python 3.13, where
Prefect's datetimes are the standard library's; on 3.11 pendulum's arithmetic in asyncpg's timestamp
encoder was 16 % of the services' CPU in a storm). The flows, workers and gateway stay on ours.

**Priorities.** Everything here shares the machine's cores, and every run waits on the same few
processes: the Prefect API (one thread, serving every run's requests), the services, PostgreSQL, the
workers and the gateway. ``--run-nice N`` starts the workers' runs at niceness N
(``RUNBOOK_RUN_NICE`` in the workers' environment, applied by ``runbook.forkrun.lower_priority``;
``--no-fork`` runs keep 0), so that they yield the CPU to those processes, as a worker sharing a
machine with the server can in production; the policy's mitigation-first increment adds to it, up
to 19. The default, 0, measures the runs at the server's priority, as every earlier figure was:
in the nineteenth session's storms 10 did not move the ratio beyond the storms' spread (README,
Benchmarks).

**Where a storm's time went.** ``incidents.json`` in the bench's folder has, for the single incident
and each of the storm's, its run created and Running, each phase's window and its TTM, in seconds
from detection (``scale_figures.incident_row``).

Usage: ``runbook bench scale [--incidents 100] [--workers 2] [--speed 100] [--limit 5] [--no-fork]
[--redis URL] [--server-prefect PATH] [--run-nice 0] [--json]``
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import secrets
import sys
import time
import tomllib
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from runbook.bench.latency import bench_home, percentile
from runbook.bench.machine import reading as machine_reading
from runbook.bench.pg_cluster import ClusterUnavailable, private_cluster
from runbook.bench.scale_cluster import (
    Setup,
    server_installation,
    start_server,
    start_workers,
    stop_all,
)
from runbook.bench.scale_figures import (
    SERVICE_PREFIX,
    TARGET_RATIO,
    bench_policy_text,
    duplicate_action_keys,
    duplicate_side_effects,
    incident_row,
    side_effects,
    ttm_figures,
    verdict,
    world_index,
)
from runbook.bench.terminate import run_terminable
from runbook.gateway.dispatcher import PrefectLauncher

DEFAULT_LIMIT = 5
DEFAULT_RUN_NICE = 0  # the runs at the server's priority (see Priorities)
# the ledger's private cluster: 100 runs at once x (pool + overflow) with room to spare
LEDGER_MAX_CONNECTIONS = 1000


class ScaleLauncher(PrefectLauncher):
    """The gateway's launcher: ``PrefectLauncher``'s, with the incident's world in the options."""

    def __init__(self, setup: Setup) -> None:
        super().__init__(setup.api_url)
        self.setup = setup

    def options(self, k: int) -> dict[str, Any]:
        from flows.runtime import Options
        from runbook.drill.world import drill_systems

        return Options(
            speed=self.setup.speed,
            policy_path=str(self.setup.policy_path),
            ledger_url=self.setup.ledger_url,
            systems=drill_systems(f"{SERVICE_PREFIX}{k}", postgres=False),
        ).model_dump(mode="json")

    async def parameters(self, incident_id: int) -> dict[str, Any]:
        inc = await asyncio.to_thread(self.setup.ledger.get_incident, incident_id)
        k = world_index(inc.service)
        if k is None:
            raise ValueError(f"INC-{incident_id} has service {inc.service!r}, not a bench world")
        return {"incident_id": incident_id, "options": self.options(k)}


# --- worlds, alerts, the storm --------------------------------------------------------------------


async def add_worlds(setup: Setup, ks: Sequence[int]) -> dict[int, dict[str, Any]]:
    """A world per ``k`` with its blocks ``scale-<k>`` and the bad deploy; the alert each raises."""
    from runbook.drill.world import drill_systems, new_credentials, save_sandbox_blocks
    from runbook.sandbox.app import create_app
    from runbook.sandbox.core import World
    from runbook.sandbox.scenarios import apply_scenario

    vendors = ("vercel", "supabase", "supabase-data", "slack", "pagerduty", "statuspage", "github")
    gate = asyncio.Semaphore(8)

    async def one(k: int) -> None:
        creds = new_credentials()
        world = World(
            token=secrets.token_urlsafe(16), tokens={v: creds[v] for v in vendors}, seed=7
        )
        base = setup.sandbox_url + setup.router.add(k, create_app(world))
        async with gate:
            await save_sandbox_blocks(
                base, creds, None, drill_systems(f"{SERVICE_PREFIX}{k}", postgres=False)
            )
        setup.worlds[k] = world

    # the first save registers the block types: never two at once on a fresh server
    new = [k for k in ks if k not in setup.worlds]
    if new:
        await one(new[0])
    await asyncio.gather(*(one(k) for k in new[1:]))
    for k in ks:
        apply_scenario(setup.worlds[k], "bad-deploy")
    bodies = await asyncio.gather(*(_alert(setup, k, gate) for k in ks))
    return dict(zip(ks, bodies, strict=True))


async def _alert(setup: Setup, k: int, gate: asyncio.Semaphore) -> dict[str, Any]:
    """Watch world ``k``'s app as the drill's alerting rules do; the Alertmanager notification."""
    from runbook.clients.app import AppClient
    from runbook.clock import utcnow
    from runbook.drill import alerting
    from runbook.policy import load_policy

    policy = load_policy(setup.policy_path)
    base = f"{setup.sandbox_url}/w{k}/app"
    started = utcnow()
    async with gate, AppClient(f"{base}/api/health", f"{base}/metrics") as app:
        for _ in range(20):
            obs = await alerting.observe(app, policy, 1.0)
            if obs.firing:
                return alerting.alertmanager_notification(
                    policy, obs, f"{SERVICE_PREFIX}{k}", started
                )
    raise RuntimeError(f"world {k}: no alerting rule fired within 20 s of the bad deploy")


async def storm(setup: Setup, bodies: Mapping[int, dict[str, Any]]) -> dict[int, int]:
    """POST every notification at once to the gateway; world k -> the incident it opened."""
    import httpx

    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=200)) as http:

        async def one(k: int) -> tuple[int, int]:
            resp = await http.post(
                f"{setup.servers[-1].url}/hooks/alertmanager",
                json=bodies[k],
                headers={"Authorization": f"Bearer {setup.token}"},
            )
            if resp.status_code != 202 or not resp.json().get("opened"):
                raise RuntimeError(f"world {k}: the gateway answered {resp.status_code}")
            return k, int(resp.json()["opened"][0])

        return dict(await asyncio.gather(*(one(k) for k in bodies)))


async def wait_final(incident_ids: Sequence[int], timeout_s: float) -> dict[int, Any]:
    """Wait until every incident's flow run is final (or the timeout); incident id -> its run.

    Each poll asks only for the runs still awaited, and only those of them that are final: the
    storm's server does not serialize a hundred running runs every two seconds for the bench. At
    the timeout the runs still awaited are read as they are."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterIdempotencyKey,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    final_types = [StateType.COMPLETED, StateType.FAILED, StateType.CANCELLED, StateType.CRASHED]
    keys = {f"incident-{i}": i for i in incident_ids}
    awaited = dict(keys)
    runs: dict[int, Any] = {}
    deadline = time.monotonic() + timeout_s
    async with get_client() as client:

        async def read(names: list[str], only_final: bool) -> None:
            state = FlowRunFilterState(type=FlowRunFilterStateType(any_=final_types))
            for at in range(0, len(names), 100):  # the API answers at most 200 runs a page
                found = await client.read_flow_runs(
                    flow_run_filter=FlowRunFilter(
                        idempotency_key=FlowRunFilterIdempotencyKey(any_=names[at : at + 100]),
                        state=state if only_final else None,
                    )
                )
                for r in found:
                    if r.idempotency_key in awaited:
                        runs[keys[r.idempotency_key]] = r
                        if r.state is not None and r.state.is_final():
                            del awaited[r.idempotency_key]

        while True:
            await read(list(awaited), only_final=True)
            if not awaited:
                return runs
            if time.monotonic() > deadline:
                await read(list(awaited), only_final=False)
                return runs
            await asyncio.sleep(2)


def collect(setup: Setup, opened: Mapping[int, int], runs: Mapping[int, Any]) -> dict[str, Any]:
    """Per incident: resolved, TTM, start delay, side effects; and the ledger's duplicate keys."""
    from runbook.timings import incident_timings

    ledger = setup.ledger
    rows, effects, ttms, resolved = [], {}, {}, 0
    stages: dict[str, list[float]] = {"created": [], "running": []}
    unresolved: list[dict[str, Any]] = []
    per_incident: list[dict[str, Any]] = []
    for k, inc_id in opened.items():
        inc = ledger.get_incident(inc_id)
        timeline = ledger.timeline(inc_id)
        timings = incident_timings(inc, timeline, ledger.deadlines(inc_id))
        nice = next((e.data.get("nice") for e in timeline if e.kind == "priority_lowered"), None)
        resolved += inc.resolved_at is not None
        if inc.resolved_at is None:
            last = [f"{e.kind}: {e.message[:160]}" for e in timeline[-4:]]
            unresolved.append({"incident": inc_id, "status": inc.status.value, "last": last})
            (setup.folder / f"unresolved-INC-{inc_id}.txt").write_text(
                "\n".join(
                    f"{e.at.isoformat()} {e.phase or ''} {e.kind}: {e.message}" for e in timeline
                )
            )
        if timings.ttm_s is not None:
            ttms[inc_id] = timings.ttm_s
        run = runs.get(inc_id)
        if run is not None:  # where the time before the first step goes: launch, then start
            stages["created"].append((run.created - inc.detected_at).total_seconds())
            if run.start_time is not None:
                stages["running"].append((run.start_time - inc.detected_at).total_seconds())
        per_incident.append(incident_row(k, inc_id, timings, run, nice))
        rows += [(a.idempotency_key, a.status.value) for a in ledger.actions_for(inc_id)]
        effects[inc_id] = side_effects(r.to_dict() for r in list(setup.worlds[k].requests))
    states = Counter(
        str(runs[i].state.name) if i in runs and runs[i].state else "no run"
        for i in opened.values()
    )
    return {
        "incidents": len(opened),
        "resolved": resolved,
        "ttms": ttms,
        "stages": stages,
        "run_states": dict(states),
        "side_effects": {str(i): dict(c) for i, c in effects.items()},
        "duplicate_side_effects": duplicate_side_effects(effects),
        "duplicate_action_keys": duplicate_action_keys(rows),
        "unresolved": unresolved[:10],
        "per_incident": per_incident,
    }


async def cancel_unfinished(incident_ids: Iterable[int]) -> None:
    """Cancel runs still going (a timed-out storm) so the workers end them before they stop."""
    from prefect.states import Cancelling

    runs = await wait_final(list(incident_ids), 0)
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        for run in runs.values():
            if run.state is not None and not run.state.is_final():
                with contextlib.suppress(Exception):
                    await client.set_flow_run_state(run.id, Cancelling(), force=True)
    await wait_final(list(incident_ids), 30)


# --- the run --------------------------------------------------------------------------------------


@contextlib.contextmanager
def running(
    folder: Path,
    speed: float,
    workers: int,
    limit: int,
    forked: bool = True,
    redis_url: str | None = None,
    server_prefect: Path | None = None,
    run_nice: int = DEFAULT_RUN_NICE,
) -> Iterator[Setup]:
    """Start everything; on the way out (errors and Ctrl-C too) stop it all and remove the private
    PostgreSQL cluster that held the ledger and the Prefect server's database."""
    setup = Setup(
        folder=folder,
        speed=speed,
        forked=forked,
        redis_url=redis_url,
        # absolute: the server's processes start in the bench's folder
        server_prefect=server_prefect.absolute() if server_prefect else None,
        run_nice=run_nice,
    )
    default = resources.files("runbook").joinpath("default_policy.toml").read_text("utf-8")
    setup.policy_path.write_text(bench_policy_text(tomllib.loads(default).get("actions", {})))
    with contextlib.ExitStack() as stack:
        # the ledger and the Prefect server's database on a private cluster: every run process
        # keeps its own ledger pool and the server a large one, and a storm with a run per incident
        # at once needs more connections than the shared server's 100
        try:
            cluster = stack.enter_context(private_cluster(max_connections=LEDGER_MAX_CONNECTIONS))
        except ClusterUnavailable as exc:
            raise RuntimeError(
                f"bench scale keeps its databases on a private PostgreSQL cluster: {exc}"
            ) from None
        setup.ledger_url = f"postgresql+psycopg://postgres@127.0.0.1:{cluster.port}/postgres"
        yield from _running(setup, workers, limit, cluster.dsn)


def _running(setup: Setup, workers: int, limit: int, admin_dsn: str) -> Iterator[Setup]:
    import prefect.settings as ps
    from pydantic import SecretStr

    from runbook.gateway.app import create_app
    from runbook.gateway.config import GatewayConfig
    from runbook.ledger import open_ledger
    from runbook.sandbox.server import serve_in_thread

    try:
        setup.ledger = open_ledger(setup.ledger_url)
        start_server(setup, admin_dsn)
        with ps.temporary_settings(updates={ps.PREFECT_API_URL: setup.api_url}):
            start_workers(setup, workers, limit)
            setup.servers.append(serve_in_thread(setup.router))
            setup.sandbox_url = setup.servers[-1].url
            gateway = create_app(
                setup.ledger,
                GatewayConfig(token=SecretStr(setup.token)),
                launcher=ScaleLauncher(setup),
            )
            setup.servers.append(serve_in_thread(gateway))
            try:
                yield setup
            finally:
                ids = setup.ledger.list_incidents(open_only=False)
                with contextlib.suppress(Exception):
                    asyncio.run(cancel_unfinished([i.id for i in ids]))
    finally:
        for server in reversed(setup.servers):
            server.stop()
        stop_all(setup.procs[1:])  # the workers, then the server (started first)
        stop_all(setup.procs[:1])
        if setup.ledger is not None:
            setup.ledger.close()


def run(incidents: int = 100, workers: int = 2, speed: float = 100.0, limit: int = DEFAULT_LIMIT,
        forked: bool = True, redis_url: str | None = None,
        server_prefect: Path | None = None,
        run_nice: int = DEFAULT_RUN_NICE) -> dict[str, Any]:  # fmt: skip
    """Set everything up, run one incident alone, then the storm; tear everything down.

    Returns:
        The figures (see ``main``).
    """
    folder = bench_home() / f"scale-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:4]}"
    folder.mkdir()
    run_nice = (
        run_nice if forked else 0
    )  # --no-fork runs are Prefect's own command: nothing applies it
    t0 = time.monotonic()
    with running(
        folder, speed, workers, limit, forked, redis_url, server_prefect, run_nice
    ) as setup:
        ready_s = time.monotonic() - t0
        single_bodies = asyncio.run(add_worlds(setup, [0]))
        single_opened = asyncio.run(storm(setup, single_bodies))
        single_runs = asyncio.run(wait_final(list(single_opened.values()), 600))
        single = collect(setup, single_opened, single_runs)
        bodies = asyncio.run(add_worlds(setup, range(1, incidents + 1)))
        t_storm = time.monotonic()
        opened = asyncio.run(storm(setup, bodies))
        runs = asyncio.run(wait_final(list(opened.values()), 120 + 20 * incidents))
        wall_s = time.monotonic() - t_storm
        load = os.getloadavg()[0]
        out = collect(setup, opened, runs)
    single_ttm = next(iter(single["ttms"].values()), None)
    out.update(ttm_figures(list(out.pop("ttms").values()), single_ttm))
    stages = out.pop("stages")
    (folder / "incidents.json").write_text(
        json.dumps({"single": single["per_incident"], "storm": out.pop("per_incident")}, indent=1)
    )
    out |= {
        "single_ttm_s": round(single_ttm, 3) if single_ttm is not None else None,
        "single_resolved": single["resolved"] == 1,
        "single_duplicates": single["duplicate_side_effects"],
        # seconds from detection (the gateway storing the alert) to the run created / running
        "p95_run_created_s": _p95(stages["created"]),
        "p95_run_running_s": _p95(stages["running"]),
        "server_db": "postgresql",
        # one process, or the API and the services apart with their messages through Redis
        "server_processes": "api + services, Redis messaging" if redis_url else "one",
        "server_python": (
            server_installation(server_prefect)["python"]
            if server_prefect
            else platform.python_version()
        ),
        "workers": workers,
        "worker_command": "runbook worker (runs forked)" if forked else "prefect worker start",
        "limit_per_worker": limit,
        "run_nice": run_nice,  # the niceness the runs started at (RUNBOOK_RUN_NICE)
        "speed": speed,
        "wall_s": round(wall_s, 1),
        "setup_s": round(ready_s, 1),
        "target_ratio": TARGET_RATIO,
        "load_avg_1m": round(load, 2),
        "cpus": os.cpu_count(),
        "folder": str(folder),
    }
    out["duplicate_side_effects"] += single["duplicate_side_effects"]
    out["duplicate_action_keys"] += single["duplicate_action_keys"]
    return out


def _p95(values: Sequence[float]) -> float | None:
    return round(percentile(values, 95), 3) if values else None


def main(incidents: int = 100, workers: int = 2, speed: float = 100.0, limit: int = DEFAULT_LIMIT,
         json_out: bool = False, forked: bool = True, redis_url: str | None = None,
         server_prefect: Path | None = None,
         run_nice: int = DEFAULT_RUN_NICE) -> int:  # fmt: skip
    """Run the benchmark once and print its figures.

    Args:
        incidents: distinct incidents in the storm.
        workers: worker processes on the pool.
        speed: the incidents' clock compression (``Options.speed``).
        limit: concurrent flow runs per worker (``--limit``).
        json_out: print one JSON object (``incidents``, ``resolved``, ``duplicate_side_effects``,
            ``p95_ttm_s``, ``single_ttm_s``, ``server_db``, ``ratio`` ...).
        forked: workers are ``runbook worker`` (runs forked from a preloaded server, the
            deployment's ``command`` is ``python -m runbook.forkrun``); False: ``prefect worker
            start`` and Prefect's own command (a new interpreter per run).
        run_nice: the niceness the forked runs start at (``RUNBOOK_RUN_NICE``; see Priorities).

    Returns:
        0 when every incident resolved, no side effect happened twice and p95 TTM is within 2x
        the single incident's; 1 otherwise (the reasons are printed).
    """
    try:
        out = run_terminable(
            "scale",
            lambda: run(
                incidents, workers, speed, limit, forked, redis_url, server_prefect, run_nice
            ),
        )
    except RuntimeError as exc:  # a setup step failed; everything started is stopped by now
        print(f"bench scale: {exc}", file=sys.stderr)
        return 1
    if isinstance(out, int):
        return out  # SIGTERM stopped it (run_terminable said so)
    why = verdict(out)
    out["ok"] = not why
    out["why"] = why
    out["machine"] = machine_reading()  # to compare figures across machines
    (Path(out["folder"]) / "result.json").write_text(json.dumps(out, indent=1))
    if json_out:
        print(json.dumps(out))
    else:
        print(
            f"{out['resolved']}/{out['incidents']} resolved on {workers} workers (limit {limit} "
            f"each) in {out['wall_s']} s; TTM p50 {out['p50_ttm_s']} s, p95 {out['p95_ttm_s']} s, "
            f"single {out['single_ttm_s']} s: ratio {out['ratio']} (target <= {TARGET_RATIO}); "
            f"duplicate side effects {out['duplicate_side_effects']}; load {out['load_avg_1m']} "
            f"on {out['cpus']} CPUs\n  folder: {out['folder']}"
        )
    for reason in why:
        print(f"not ok: {reason}", file=sys.stderr)
    return 0 if out["ok"] else 1
