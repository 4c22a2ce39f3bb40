"""What every sender's parser shares: the parse error, JSON loading, coercion helpers.

Parsers are pure functions ``parse(body: bytes, headers: Mapping[str, str]) -> list[Alert]``: no I/O,
no clock (the ledger stamps ``received_at``). They raise ``ParseError`` with a reason a sender's
operator can act on; the app turns it into a 400 and keeps the raw body as a dead letter.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import orjson

from runbook.models import Alert, Severity

Parser = Callable[[bytes, Mapping[str, str]], list[Alert]]

# Alertmanager's "zero" endsAt for a firing alert (Go's zero time)
ZERO_TIME_PREFIX = "0001-01-01"
MAX_ALERTS_PER_BODY = 10_000
MAX_TEXT = 4096

# sender words for urgency -> the policy's levels; P0 is only ever given explicitly
_SEVERITY_WORDS: dict[str, Severity] = {
    "p0": Severity.P0,
    "sev0": Severity.P0,
    "p1": Severity.P1,
    "sev1": Severity.P1,
    "critical": Severity.P1,
    "fatal": Severity.P1,
    "page": Severity.P1,
    "high": Severity.P1,
    "p2": Severity.P2,
    "sev2": Severity.P2,
    "error": Severity.P2,
    "major": Severity.P2,
    "p3": Severity.P3,
    "sev3": Severity.P3,
    "p4": Severity.P3,
    "p5": Severity.P3,
    "warning": Severity.P3,
    "warn": Severity.P3,
    "minor": Severity.P3,
    "low": Severity.P3,
    "info": Severity.P3,
}


class ParseError(ValueError):
    """The body is not what this sender sends; the message says what is wrong."""


def load_json(body: bytes) -> Any:
    """Decode a JSON body.

    Raises:
        ParseError: not UTF-8 JSON.
    """
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise ParseError(f"the body is not valid UTF-8 JSON ({error})") from error


def require_object(value: Any, where: str) -> dict[str, Any]:
    """``value`` if it is a JSON object, else ParseError naming ``where``."""
    if not isinstance(value, dict):
        raise ParseError(f"{where} must be a JSON object, got {type(value).__name__}")
    return value


def text(value: Any, where: str = "", limit: int = MAX_TEXT) -> str:
    """A scalar as text (numbers allowed), ``""`` for null; ParseError for objects and lists."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value[:limit]
    if isinstance(value, bool | int | float):
        return str(value)
    raise ParseError(f"{where or 'a field'} must be a string, got {type(value).__name__}")


def string_map(value: Any, where: str) -> dict[str, str]:
    """A JSON object of scalars as ``dict[str, str]``; null is empty; anything else is an error."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ParseError(f"{where} must be an object of strings, got {type(value).__name__}")
    return {str(k)[:256]: text(v, f"{where}.{k}") for k, v in value.items()}


def timestamp(value: Any, where: str) -> datetime | None:
    """An RFC 3339 string or Unix seconds as an aware UTC datetime; null/empty/zero time is None."""
    if value is None or value == "" or value == 0:
        return None
    if isinstance(value, bool):
        raise ParseError(f"{where} must be a timestamp, got a boolean")
    if isinstance(value, int | float):
        if not 0 < value < 1e11:
            raise ParseError(f"{where} must be Unix seconds or RFC 3339, got {value!r}")
        return datetime.fromtimestamp(value, tz=UTC)
    if not isinstance(value, str):
        raise ParseError(f"{where} must be an RFC 3339 timestamp, got {type(value).__name__}")
    if value.startswith(ZERO_TIME_PREFIX):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError as error:
        raise ParseError(f"{where} is not an RFC 3339 timestamp: {value[:64]!r}") from error
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def severity(value: Any) -> Severity | None:
    """The policy level a sender's severity word means (critical -> P1 ...), or None if unknown."""
    if not isinstance(value, str):
        return None
    return _SEVERITY_WORDS.get(value.strip().lower())


def digest(*parts: object) -> str:
    """A short stable id from parts (for delivery ids built from a body's content)."""
    joined = "\x1f".join(str(p) for p in parts).encode("utf-8", "surrogatepass")
    return hashlib.sha256(joined).hexdigest()[:32]


def label_fingerprint(labels: Mapping[str, str]) -> str:
    """A fingerprint from sorted labels, for senders that do not send one."""
    return digest(*(f"{k}={labels[k]}" for k in sorted(labels)))[:16]


class LowerHeaders(dict[str, str]):
    """Request headers whose names are lower-case already (as ASGI gives them)."""


def header(headers: Mapping[str, str], name: str) -> str:
    """A header's value (case-insensitive for plain dicts too), ``""`` if absent."""
    lower = name.lower()
    value = headers.get(lower)
    if value is None and not isinstance(headers, LowerHeaders):
        value = headers.get(name)  # Starlette's Headers ignore case; a plain dict may not
        if value is None:
            value = next((v for k, v in headers.items() if k.lower() == lower), None)
    return value or ""


def _clean(value: str, limit: int) -> str:
    # PostgreSQL refuses NUL in text and JSON; a key too long for its column keeps a hash suffix
    value = value.replace("\x00", "")
    if len(value) > limit:
        value = value[: limit - 33] + "~" + digest(value)
    return value


def sanitize(alert: Alert) -> Alert:
    """Fit an alert to the ledger's columns: no NUL characters, identifiers within their lengths.

    Long identifiers keep a hash of the whole value, so two long keys that differ only at the end
    stay different. Fields that already fit are left alone (the common case costs no assignment).
    """
    raw_key = alert.dedup_key
    for name, limit in _LIMITS:
        value = getattr(alert, name)
        if "\x00" in value or len(value) > limit:
            setattr(alert, name, _clean(value, limit))
    if not alert.delivery_id:
        alert.delivery_id = digest(raw_key)
    for name in ("labels", "annotations"):
        pairs: dict[str, str] = getattr(alert, name)
        if any(_unfit(k, 256) or _unfit(v, MAX_TEXT) for k, v in pairs.items()):
            setattr(alert, name, {_clean(k, 256): _clean(v, MAX_TEXT) for k, v in pairs.items()})
    if alert.links and (len(alert.links) > 20 or any(_unfit(u, 2048) for u in alert.links)):
        alert.links = [_clean(u, 2048) for u in alert.links[:20]]
    return alert


_LIMITS = (("delivery_id", 256), ("fingerprint", 256), ("dedup_key", 512), ("service", 200),
           ("summary", MAX_TEXT))  # fmt: skip


def _unfit(value: str, limit: int) -> bool:
    return len(value) > limit or "\x00" in value
