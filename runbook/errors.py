"""One error tree for the whole project.

::

    RunbookError
    ├── TransientError            retry with backoff (timeouts, connection errors, 429, 420, 5xx)
    │     .retry_after            seconds the vendor asked us to wait, when it said so
    └── PermanentError            fail at once; the message says what to fix (other 4xx, validation)
          ├── ConfigError         bad policy file, missing block, bad DSN
          │     └── PolicyError   a policy value is wrong; .path names the field
          └── InvalidTransition   an incident lifecycle move the lifecycle forbids

    Per external system, a family that is both a "<System>Error" and transient or permanent:

    VercelError ─┬─ VercelTransientError (VercelError, TransientError)
                 └─ VercelPermanentError (VercelError, PermanentError)
    ... likewise Supabase, Slack, Teams, PagerDuty, Statuspage, GitHub, Jira, App, Ledger, Postgres.

So ``except TransientError`` catches every retryable failure, ``except SlackError`` every Slack failure.
Always raise ``from`` the cause. Messages never contain credentials.
"""

from __future__ import annotations

from typing import Any


class RunbookError(Exception):
    """Root of every error this project raises on purpose.

    Attributes:
        system: the external system involved ("vercel", "slack", ...) or "runbook".
        status_code: the HTTP status the vendor answered, if any.
        vendor_message: the vendor's own error text (code or message), if any.
        retry_after: seconds to wait before retrying, when the vendor said so.
    """

    system: str = "runbook"
    transient: bool = False

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        vendor_message: str | None = None,
        retry_after: float | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.vendor_message = vendor_message
        self.retry_after = retry_after
        self.details = details or {}

    def __str__(self) -> str:
        return self.message


class TransientError(RunbookError):
    """A failure that may succeed on retry: timeout, connection error, 429/420, 5xx."""

    transient = True


class PermanentError(RunbookError):
    """A failure that will not succeed on retry; the message says what to fix."""


class ConfigError(PermanentError):
    """Configuration is missing or wrong (policy file, block, DSN, environment)."""


class PolicyError(ConfigError):
    """A policy value is invalid. ``path`` is the dotted path of the offending field."""

    def __init__(self, message: str, *, path: str = "") -> None:
        super().__init__(message)
        self.path = path


class InvalidTransition(PermanentError):
    """An incident lifecycle transition that the lifecycle does not allow."""


def is_transient(exc: BaseException) -> bool:
    """True when ``exc`` (or what it was raised from) is worth retrying."""
    return isinstance(exc, TransientError)


# --- per-system families -------------------------------------------------------------------------


class VercelError(RunbookError):
    system = "vercel"


class VercelTransientError(VercelError, TransientError):
    pass


class VercelPermanentError(VercelError, PermanentError):
    pass


class SupabaseError(RunbookError):
    system = "supabase"


class SupabaseTransientError(SupabaseError, TransientError):
    pass


class SupabasePermanentError(SupabaseError, PermanentError):
    pass


class SlackError(RunbookError):
    system = "slack"


class SlackTransientError(SlackError, TransientError):
    pass


class SlackPermanentError(SlackError, PermanentError):
    pass


class TeamsError(RunbookError):
    system = "teams"


class TeamsTransientError(TeamsError, TransientError):
    pass


class TeamsPermanentError(TeamsError, PermanentError):
    pass


class PagerDutyError(RunbookError):
    system = "pagerduty"


class PagerDutyTransientError(PagerDutyError, TransientError):
    pass


class PagerDutyPermanentError(PagerDutyError, PermanentError):
    pass


class StatuspageError(RunbookError):
    system = "statuspage"


class StatuspageTransientError(StatuspageError, TransientError):
    pass


class StatuspagePermanentError(StatuspageError, PermanentError):
    pass


class GitHubError(RunbookError):
    system = "github"


class GitHubTransientError(GitHubError, TransientError):
    pass


class GitHubPermanentError(GitHubError, PermanentError):
    pass


class JiraError(RunbookError):
    system = "jira"


class JiraTransientError(JiraError, TransientError):
    pass


class JiraPermanentError(JiraError, PermanentError):
    pass


class AppError(RunbookError):
    system = "app"


class AppTransientError(AppError, TransientError):
    pass


class AppPermanentError(AppError, PermanentError):
    pass


class LedgerError(RunbookError):
    system = "ledger"


class LedgerUnavailableError(LedgerError, TransientError):
    """The ledger database cannot be reached (the gateway answers 503)."""


class LedgerPermanentError(LedgerError, PermanentError):
    pass


class PostgresError(RunbookError):
    system = "postgres"


class PostgresTransientError(PostgresError, TransientError):
    pass


class PostgresPermanentError(PostgresError, PermanentError):
    pass
