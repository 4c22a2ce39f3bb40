"""The runbook as data: severities, phase windows, thresholds, escalation, routing, reviews, actions.

The defaults live in ``runbook/default_policy.toml`` (the runbook's own values). A team's policy file
(TOML or YAML; ``RUNBOOK_POLICY`` or ``--policy``) is deep-merged over them and validated; a wrong value
raises PolicyError naming the field's dotted path, e.g. ``severities.P1.response_time``.

Everything a flow needs to decide from the policy is a plain method here (deadlines, escalation,
routing, action modes), so it is testable without Prefect.
"""

from __future__ import annotations

import os
import re
import tomllib
from datetime import datetime, timedelta
from enum import StrEnum
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from runbook.errors import PolicyError
from runbook.models import Phase, Severity
from runbook.recovery import MAX_RELAUNCHES, RELAUNCH_CEILING

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(w|d|h|m|s)")
_UNITS = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}


def parse_duration(value: Any) -> timedelta:
    """Parse ``"90s"``, ``"5m"``, ``"1h30m"``, ``"1d"``, ``"1w"``, a number of seconds or a timedelta.

    Raises:
        ValueError: saying what a duration looks like.
    """
    if isinstance(value, timedelta):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return timedelta(seconds=value)
    if isinstance(value, str):
        text = value.strip().lower().replace(" ", "")
        parts = _DURATION_PART.findall(text)
        if text and parts and "".join(n + u for n, u in parts) == text:
            return timedelta(seconds=sum(float(n) * _UNITS[u] for n, u in parts))
    raise ValueError(f"{value!r} is not a duration; write it like 90s, 5m, 1h30m, 1d or 1w")


def format_duration(td: timedelta) -> str:
    """Render a timedelta the way the policy file writes it (``1h30m``, ``5m``, ``1w``)."""
    seconds = int(td.total_seconds())
    if seconds == 0:
        return "0m"
    out = []
    for unit, size in _UNITS.items():
        if seconds >= size:
            n, seconds = divmod(seconds, size)
            out.append(f"{n}{unit}")
    return "".join(out)


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SeverityAction(StrEnum):
    PAGE_ONCALL = "page_oncall"
    WAR_ROOM = "war_room"
    ALERT_ENGINEERING = "alert_engineering"
    NOTIFY_SLACK = "notify_slack"
    CREATE_TICKET = "create_ticket"
    STATUS_PAGE = "status_page"
    BUSINESS_HOURS = "business_hours"
    BACKLOG = "backlog"


class SeverityPolicy(_Strict):
    name: str
    summary: str
    response_time: Duration
    window_scale: float = Field(gt=0)
    estimated_resolution: Duration
    examples: list[str] = []
    actions: list[SeverityAction] = []
    description: str = ""


class PhasePolicy(_Strict):
    title: str
    start: Duration
    end: Duration | None = None
    checklist: list[str] = []

    @model_validator(mode="after")
    def _ordered(self) -> PhasePolicy:
        if self.end is not None and self.end <= self.start:
            raise ValueError("end must come after start")
        return self


class Threshold(_Strict):
    unit: str
    worse: Literal["above", "below"]
    target: float
    alert: float
    severity: Severity

    @model_validator(mode="after")
    def _consistent(self) -> Threshold:
        if self.worse == "above" and self.alert < self.target:
            raise ValueError("for a metric where higher is worse, alert must be >= target")
        if self.worse == "below" and self.alert > self.target:
            raise ValueError("for a metric where lower is worse, alert must be <= target")
        return self

    def level(self, value: float) -> Literal["ok", "warning", "alert"]:
        """Where ``value`` stands: within target, past target only (warning), or past alert."""
        past = (lambda a, b: a > b) if self.worse == "above" else (lambda a, b: a < b)
        if past(value, self.alert) or value == self.alert:
            return "alert"
        if past(value, self.target):
            return "warning"
        return "ok"


class Monitoring(_Strict):
    recurrence_watch: Duration
    auto_resolve_after: Duration
    flap_window: Duration
    auto_resolve_on_alerts_resolved: bool = False


class EscalationLevel(_Strict):
    role: str
    contact: str = ""


class Escalation(_Strict):
    resolution_overrun_factor: float = Field(gt=1)
    on_severity_increase: bool = True
    chain: list[EscalationLevel] = Field(min_length=1)


class Routing(_Strict):
    pagerduty: list[Severity]
    slack: list[Severity]
    email_daily_summary: bool = True
    customer_email: list[Severity] = []
    customer_email_to: list[str] = []
    team_email_to: list[str] = []  # the daily summary and the review reminders
    email_sender: str = "incidents@localhost"
    status_page: list[Severity] = []


class ChecklistItem(_Strict):
    key: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    title: str


class Review(_Strict):
    key: str
    after: Duration
    checklist: list[ChecklistItem] = Field(min_length=1)


ActionMode = Literal["auto", "approve", "never"]


class ActionPolicy(_Strict):
    P0: ActionMode
    P1: ActionMode
    P2: ActionMode
    P3: ActionMode
    min_interval: Duration

    def mode(self, severity: Severity) -> ActionMode:
        mode: ActionMode = getattr(self, severity.value)
        return mode


class Approvals(_Strict):
    timeout: Duration
    max_failed_applications: int = Field(ge=1)


class RcaPolicy(_Strict):
    """Who owns the RCA's prevention action items, and how long they get."""

    default_owner: str = "Engineering Lead"
    owners: dict[str, str] = {}  # scenario (bad-deploy, db-degradation ...) -> owner
    action_item_due: Duration = timedelta(weeks=1)

    def owner(self, scenario: str | None) -> str:
        return self.owners.get(scenario or "", self.default_owner)


class RecoveryPolicy(_Strict):
    """Incidents whose flow run died with its worker (``runbook.recovery``): how many times the
    watcher launches one again before leaving it to people (0: never)."""

    max_relaunches: int = Field(default=MAX_RELAUNCHES, ge=0, le=RELAUNCH_CEILING)


class Policy(_Strict):
    """The whole incident-response policy. Build it with ``load_policy``."""

    severities: dict[Severity, SeverityPolicy]
    phases: dict[Phase, PhasePolicy]
    classification: dict[str, Severity]
    thresholds: dict[str, Threshold]
    monitoring: Monitoring
    escalation: Escalation
    routing: Routing
    reviews: list[Review] = Field(min_length=1)
    actions: dict[str, ActionPolicy]
    approvals: Approvals
    rca: RcaPolicy = RcaPolicy()
    recovery: RecoveryPolicy = RecoveryPolicy()

    @model_validator(mode="after")
    def _complete(self) -> Policy:
        missing = [s.value for s in Severity if s not in self.severities]
        if missing:
            raise ValueError(f"severities: missing {', '.join(missing)}")
        missing = [p.value for p in Phase if p not in self.phases]
        if missing:
            raise ValueError(f"phases: missing {', '.join(missing)}")
        keys = [r.key for r in self.reviews]
        if len(set(keys)) != len(keys):
            raise ValueError("reviews: keys must be unique")
        return self

    # --- decisions --------------------------------------------------------------------------------
    def deadline(self, phase: Phase, severity: Severity, detected_at: datetime) -> datetime | None:
        """When ``phase`` must be done for an incident of ``severity`` detected at ``detected_at``.

        Returns None for a phase with no deadline (communicate is ongoing).
        """
        window = self.phases[phase]
        if window.end is None:
            return None
        return detected_at + window.end * self.severities[severity].window_scale

    def deadlines(self, severity: Severity, detected_at: datetime) -> dict[Phase, datetime]:
        """Every phase's deadline (phases without one are left out)."""
        out = {}
        for phase in Phase:
            due = self.deadline(phase, severity, detected_at)
            if due is not None:
                out[phase] = due
        return out

    def response_deadline(self, severity: Severity, detected_at: datetime) -> datetime:
        return detected_at + self.severities[severity].response_time

    def resolution_overrun(self, severity: Severity, elapsed: timedelta) -> bool:
        """True when resolving has taken more than the overrun factor (2x) times the estimate."""
        estimate = self.severities[severity].estimated_resolution
        return elapsed > estimate * self.escalation.resolution_overrun_factor

    def escalation_level(self, level: int) -> EscalationLevel:
        """The chain's ``level``-th contact (0 = Engineering Lead); past the end, the last one."""
        chain = self.escalation.chain
        return chain[min(max(level, 0), len(chain) - 1)]

    def pages(self, severity: Severity) -> bool:
        return severity in self.routing.pagerduty

    def requires(self, severity: Severity, action: SeverityAction) -> bool:
        return action in self.severities[severity].actions

    def action_mode(self, action: str, severity: Severity) -> ActionMode:
        """auto, approve or never for a mitigation action at a severity; unknown actions need approval."""
        rule = self.actions.get(action)
        return rule.mode(severity) if rule else "approve"

    def review(self, key: str) -> Review:
        for r in self.reviews:
            if r.key == key:
                return r
        raise KeyError(
            f"no review {key!r}; the policy has {', '.join(r.key for r in self.reviews)}"
        )


# --- loading --------------------------------------------------------------------------------------


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


@cache
def default_policy_data() -> dict[str, Any]:
    text = resources.files("runbook").joinpath("default_policy.toml").read_text(encoding="utf-8")
    return tomllib.loads(text)


def read_policy_file(path: str | Path) -> dict[str, Any]:
    """Read a TOML or YAML policy file into a dict.

    Raises:
        PolicyError: the file is missing or cannot be parsed (with the parser's reason).
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError(f"cannot read policy file {p}: {exc.strerror}") from exc
    try:
        if p.suffix.lower() in (".yaml", ".yml"):
            data = yaml.safe_load(text) or {}
        else:
            data = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        raise PolicyError(
            f"policy file {p} is not valid {p.suffix.lstrip('.') or 'TOML'}: {exc}"
        ) from exc
    if not isinstance(data, dict):
        raise PolicyError(f"policy file {p} must hold a table/mapping at the top level")
    return data


def _error_path(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc if not str(part).startswith("function-"))


def build_policy(overrides: dict[str, Any] | None = None) -> Policy:
    """Validate the defaults deep-merged with ``overrides``.

    Raises:
        PolicyError: the first wrong value, with ``path`` set to its dotted field path.
    """
    data = _deep_merge(default_policy_data(), overrides or {})
    try:
        return Policy.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        path = _error_path(first["loc"])
        msg = first["msg"].removeprefix("Value error, ")
        extra = f" ({len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
        raise PolicyError(f"policy field {path or '<root>'}: {msg}{extra}", path=path) from exc


def load_policy(path: str | Path | None = None) -> Policy:
    """The active policy: defaults, overridden by ``path`` or else the file ``RUNBOOK_POLICY`` names."""
    path = path or os.environ.get("RUNBOOK_POLICY") or None
    return build_policy(read_policy_file(path) if path else None)
