"""The load generator of ``runbook bench ingest``: processes of raw keep-alive HTTP/1.1 clients.

Requests are pre-built bytes and responses are read by ``Content-Length`` only, so a client costs a
few microseconds per request and the server under test stays the bottleneck. Every process reports
its latencies and its own CPU time; the caller turns that into the generator's CPU share.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import queue
import time
from multiprocessing.synchronize import Event
from typing import Any

import httpx

CLIENT_PROCS = 2
DEFAULT_CONNECTIONS = 128


def wait_ready(host: str, port: int, path: str, timeout: float = 30.0) -> None:
    """Wait until ``GET path`` answers 200.

    Raises:
        RuntimeError: it did not within ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://{host}:{port}{path}", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"http://{host}:{port}{path} did not answer 200 within {timeout} s")


def _request(host: str, port: int, path: str, body: bytes, headers: dict[str, str]) -> bytes:
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}", "Content-Type: application/json",
             f"Content-Length: {len(body)}", *(f"{k}: {v}" for k, v in headers.items())]  # fmt: skip
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def _client(
    host: str, port: int, requests: list[bytes], rate: float | None, start: Event, connections: int
) -> dict[str, Any]:
    conns = [await asyncio.open_connection(host, port) for _ in range(connections)]
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    next_index = 0
    await asyncio.to_thread(start.wait)
    began = time.monotonic()

    async def worker(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal next_index
        while next_index < len(requests):
            index = next_index
            next_index += 1
            if rate:
                delay = began + index / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            sent = time.monotonic()
            writer.write(requests[index])
            head = await reader.readuntil(b"\r\n\r\n")
            lower = head.lower()
            at = lower.find(b"content-length:")
            length = int(lower[at + 15 : lower.find(b"\r\n", at)]) if at >= 0 else 0
            await reader.readexactly(length)
            latencies.append(time.monotonic() - sent)
            status = int(head[9:12])
            statuses[status] = statuses.get(status, 0) + 1

    await asyncio.gather(*(worker(r, w) for r, w in conns))
    ended = time.monotonic()
    for _, writer in conns:
        writer.close()
    return {"latencies": latencies, "statuses": statuses, "began": began, "ended": ended}


def _child(
    host: str, port: int, requests: list[bytes], rate: float | None, start: Event, out: Any,
    connections: int,
) -> None:  # fmt: skip
    cpu = time.process_time()
    result = asyncio.run(_client(host, port, requests, rate, start, connections))
    result["cpu_s"] = time.process_time() - cpu
    out.put(result)


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 2)


def _collect(out: Any, procs: list[Any], timeout_s: float = 600) -> list[dict[str, Any]]:
    """Every child's result; a child that died without one is an error, not a 10-minute wait."""
    results: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout_s
    while len(results) < len(procs):
        try:
            results.append(out.get(timeout=1))
        except queue.Empty:
            failed = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
            if failed:
                raise RuntimeError(f"a load-generator process exited with {failed[0]}") from None
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the load generator gave no result in {timeout_s:.0f} s"
                ) from None
    return results


def drive(
    host: str, port: int, path: str, bodies: list[bytes], headers: dict[str, str],
    rate: float | None = None, connections: int = DEFAULT_CONNECTIONS,
) -> dict[str, Any]:  # fmt: skip
    """Send every body once as ``POST path`` from several processes; return throughput and latency.

    Args:
        host: the server's host.
        port: the server's port.
        path: the request path.
        bodies: one request body each.
        headers: extra headers (e.g. Authorization).
        rate: requests per second in all (None: as fast as the server answers).
        connections: keep-alive connections in all, each with one request in flight (split
            evenly over the processes).

    Returns:
        ``ok`` (2xx), ``errors``, ``statuses``, ``wall_s``, ``p50_ms``/``p95_ms``/``p99_ms``,
        ``connections`` and ``client_cpu_s`` (the generator's CPU time, all processes).
    """
    ctx = mp.get_context("fork")  # the children need nothing but the request bytes
    start = ctx.Event()
    out = ctx.Queue()
    if connections < CLIENT_PROCS:
        raise ValueError(f"connections must be at least {CLIENT_PROCS}, not {connections}")
    shares = [bodies[i::CLIENT_PROCS] for i in range(CLIENT_PROCS)]
    per_proc = connections // CLIENT_PROCS
    procs = []
    for share in shares:
        requests = [_request(host, port, path, b, headers) for b in share]
        per_rate = rate / CLIENT_PROCS if rate else None
        proc = ctx.Process(
            target=_child, args=(host, port, requests, per_rate, start, out, per_proc)
        )
        proc.start()
        procs.append(proc)
    time.sleep(0.3)  # let every client connect before the clock starts
    start.set()
    results = _collect(out, procs)
    for proc in procs:
        proc.join(10)
    latencies = [lat for r in results for lat in r["latencies"]]
    statuses: dict[int, int] = {}
    for r in results:
        for code, n in r["statuses"].items():
            statuses[code] = statuses.get(code, 0) + n
    ok = sum(n for code, n in statuses.items() if 200 <= code < 300)
    wall = max(r["ended"] for r in results) - min(r["began"] for r in results)
    return {
        "ok": ok, "errors": sum(statuses.values()) - ok + len(bodies) - len(latencies),
        "statuses": statuses, "wall_s": wall, "p50_ms": _percentile(latencies, 0.50),
        "p95_ms": _percentile(latencies, 0.95), "p99_ms": _percentile(latencies, 0.99),
        "connections": CLIENT_PROCS * per_proc,
        "client_cpu_s": sum(r["cpu_s"] for r in results),
    }  # fmt: skip
