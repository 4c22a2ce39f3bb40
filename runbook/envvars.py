"""Whole-number settings read from the environment: blank means the default, anything else must
be a whole number within its bounds, or ``ConfigError`` says which variable, what it takes and what
it was given."""

from __future__ import annotations

from collections.abc import Mapping

from runbook.errors import ConfigError


def whole_number(
    env: Mapping[str, str],
    name: str,
    default: int,
    least: int,
    most: int | None = None,
    least_is_off: bool = False,
) -> int:
    """``env[name]`` as a whole number from ``least`` (to ``most``), ``default`` when blank or unset;
    ``least_is_off``: the message says that the lowest value turns the setting off.

    Raises:
        ConfigError: not a whole number, or outside the bounds.
    """
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = least - 1
    if value < least or (most is not None and value > most):
        off = " (off)" if least_is_off else ""
        allowed = f"of at least {least}{off}" if most is None else f"from {least}{off} to {most}"
        raise ConfigError(f"{name} must be a whole number {allowed}, not {raw!r}")
    return value
