"""Where the ledger lives: URL resolution and a password-free rendering for messages.

Resolution order: an explicit URL, else ``RUNBOOK_LEDGER_URL``, else a SQLite file
``$RUNBOOK_HOME/ledger.db`` (``RUNBOOK_HOME`` defaults to ``~/.runbook``, created on demand).
"""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from runbook.errors import ConfigError

ENV_URL = "RUNBOOK_LEDGER_URL"
ENV_HOME = "RUNBOOK_HOME"
DEFAULT_PG_PORT = 5432


def runbook_home() -> Path:
    """The folder for local state: ``$RUNBOOK_HOME`` or ``~/.runbook`` (created if missing).

    Returns:
        The folder's path.
    """
    home = Path(os.environ.get(ENV_HOME) or Path.home() / ".runbook").expanduser()
    home.mkdir(parents=True, exist_ok=True)
    return home


def resolve_url(url: str | URL | None = None) -> URL:
    """Pick the ledger's database URL.

    Args:
        url: an explicit SQLAlchemy URL; wins over the environment.

    Returns:
        The parsed URL.

    Raises:
        ConfigError: the URL cannot be parsed (the message shows it with the password masked).
    """
    if isinstance(url, URL):
        return url
    text = url or os.environ.get(ENV_URL) or ""
    if not text:
        return URL.create("sqlite", database=str(runbook_home() / "ledger.db"))
    try:
        return make_url(text)
    except ArgumentError as exc:
        # the text may hold a password we could not parse out, so it is not echoed back
        raise ConfigError(
            "the ledger URL is not a valid SQLAlchemy URL; use e.g. "
            "postgresql+psycopg://user@host:5432/runbook or sqlite:////path/ledger.db "
            f"in {ENV_URL}"
        ) from exc


def describe_url(url: str | URL) -> str:
    """Render ``url`` for people and logs, with any password masked as ``***``.

    Args:
        url: a URL string or object.

    Returns:
        The URL text without its password.
    """
    try:
        parsed = url if isinstance(url, URL) else make_url(url)
    except ArgumentError:
        return "<unparseable ledger URL>"
    return parsed.render_as_string(hide_password=True)


def is_sqlite(url: URL) -> bool:
    """True when ``url`` names a SQLite database."""
    return url.get_backend_name() == "sqlite"


def location(url: URL) -> str:
    """Where the database is, for one-line messages: ``host:port`` or the SQLite file path.

    Args:
        url: the parsed URL.

    Returns:
        ``"127.0.0.1:5432"``, ``"/home/me/.runbook/ledger.db"`` or ``":memory:"``.
    """
    if is_sqlite(url):
        return url.database or ":memory:"
    return f"{url.host or 'localhost'}:{url.port or DEFAULT_PG_PORT}"
