"""The sandbox world's machinery: shared state, request log, fault injection, vendor registry.

Each vendor lives in its own module (``runbook/sandbox/<vendor>.py``) exposing:

    NAME: str                                   # the path prefix, e.g. "vercel" -> /vercel/...
    def init_state(world: World) -> None        # put the vendor's state in world.state[NAME]
    def routes(world: World) -> list[BaseRoute] # Starlette routes, paths as the vendor's own
    def error_response(status: int, message: str, retry_after: float | None = None) -> Response
                                                # the vendor's own error body for injected faults

``create_app`` (in app.py) mounts every vendor under ``/<NAME>`` and the control API under
``/_sandbox``. The world is deterministic for a given seed: every random choice uses ``world.rng``.
"""

from __future__ import annotations

import asyncio
import random
import re
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from runbook.clock import Clock, SystemClock

DEFAULT_TOKEN = "sandbox-token"
REDACTED = "***"
_SECRET_HEADERS = {"authorization", "apikey", "x-api-key", "cookie"}

# credentials some vendors take in the body (PagerDuty's routing key, a Slack token in a form post)
_SECRET_BODY_FIELDS = re.compile(r'("(?:routing_key|token|api_key|password)"\s*:\s*)"[^"]*"')

_SECRET_FORM_FIELDS = re.compile(r"(?:(?<=^)|(?<=&))((?:routing_key|token|api_key|password)=)[^&]*")

FaultKind = Literal["error", "rate_limit", "latency", "timeout"]


@dataclass
class RecordedRequest:
    """One request the sandbox answered (credentials redacted)."""

    seq: int
    at: str
    vendor: str
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: str
    status: int = 0
    fault: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class FaultRule:
    """A fault injected into one vendor's endpoints.

    Attributes:
        vendor: vendor NAME ("vercel", "slack", ...) or "*" for all.
        kind: "error" (5xx), "rate_limit" (429 with Retry-After; 420 for statuspage if status=420),
            "latency" (added delay, then the normal answer), "timeout" (holds ``latency_s``, default 30 s).
        path: a regular expression searched in the path after the vendor prefix; None matches all.
        method: HTTP method to match; None matches all.
        rate: probability in [0, 1] that a matching request gets the fault.
        status: HTTP status for "error" (default 503) or "rate_limit" (default 429).
        retry_after: seconds in the Retry-After header of a rate_limit fault.
        latency_s: delay for "latency" and "timeout".
        remaining: how many more times it may fire (None = unlimited).
    """

    vendor: str
    kind: FaultKind
    path: str | None = None
    method: str | None = None
    rate: float = 1.0
    status: int | None = None
    retry_after: float = 1.0
    latency_s: float = 0.0
    remaining: int | None = None
    id: int = 0

    def matches(self, vendor: str, method: str, path: str) -> bool:
        if self.vendor not in ("*", vendor):
            return False
        if self.method and self.method.upper() != method.upper():
            return False
        if self.path and not re.search(self.path, path):
            return False
        return self.remaining is None or self.remaining > 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class World:
    """All state of the simulated production world.

    Vendor modules keep their own state in ``state[NAME]``; cross-vendor effects (a bad production
    deployment raising the app's error rate) read each other's state through here.
    """

    token: str = DEFAULT_TOKEN
    tokens: dict[str, str] = field(default_factory=dict)  # vendor NAME -> its own credential
    seed: int | None = None
    clock: Clock = field(default_factory=SystemClock)
    scenario: str | None = None
    database_url: str | None = None
    state: dict[str, Any] = field(default_factory=dict)
    requests: list[RecordedRequest] = field(default_factory=list)
    faults: list[FaultRule] = field(default_factory=list)
    rng: random.Random = field(init=False)
    _seq: int = field(default=0, init=False)
    _fault_seq: int = field(default=0, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)
    hooks: dict[str, Callable[..., Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)  # noqa: S311 - simulation, not security

    def token_for(self, vendor: str) -> str:
        """The credential ``vendor`` accepts: its own if set in ``tokens``, else the world's."""
        return self.tokens.get(vendor, self.token)

    # --- faults ---------------------------------------------------------------------------------
    def add_fault(self, rule: FaultRule) -> FaultRule:
        with self._lock:
            self._fault_seq += 1
            rule.id = self._fault_seq
            self.faults.append(rule)
        return rule

    def clear_faults(self, vendor: str | None = None) -> None:
        with self._lock:
            self.faults = [f for f in self.faults if vendor is not None and f.vendor != vendor]

    def pick_fault(self, vendor: str, method: str, path: str) -> FaultRule | None:
        """Return the first matching fault that fires for this request (consumes one use)."""
        with self._lock:
            for rule in self.faults:
                if rule.matches(vendor, method, path) and self.rng.random() < rule.rate:
                    if rule.remaining is not None:
                        rule.remaining -= 1
                    return rule
        return None

    # --- request log ----------------------------------------------------------------------------
    def record(
        self, vendor: str, method: str, path: str, query: str, headers: dict[str, str], body: bytes
    ) -> RecordedRequest:
        clean = {
            k.lower(): (REDACTED if k.lower() in _SECRET_HEADERS else v) for k, v in headers.items()
        }
        text = body[:8192].decode("utf-8", errors="replace")
        text = _SECRET_BODY_FIELDS.sub(r'\1"' + REDACTED + '"', text)
        text = _SECRET_FORM_FIELDS.sub(r"\1" + REDACTED, text)
        with self._lock:
            self._seq += 1
            rec = RecordedRequest(
                seq=self._seq,
                at=self.clock.now().isoformat(),
                vendor=vendor,
                method=method,
                path=path,
                query=query,
                headers=clean,
                body=text,
            )
            self.requests.append(rec)
        return rec

    def requests_for(
        self, vendor: str | None = None, path: str | None = None
    ) -> list[RecordedRequest]:
        """Recorded requests (newest last), optionally filtered by vendor and path regex."""
        return [
            r
            for r in self.requests
            if (vendor is None or r.vendor == vendor) and (path is None or re.search(path, r.path))
        ]


async def hold(seconds: float) -> None:
    """Delay an answer (real time: faults simulate wire latency, not clock time)."""
    if seconds > 0:
        await asyncio.sleep(seconds)
