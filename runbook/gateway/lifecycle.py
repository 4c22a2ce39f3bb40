"""What happens around an alert besides storing it: flapping, and every alert of an incident resolved.

- Flapping: a dedup key whose alerts change between firing and resolved ``flap_changes`` times
  within ``flap_window`` is flapping. Its alerts get the label ``flapping="true"`` and the incident a
  timeline line; a flapping incident is never auto-resolved, so the next "firing" attaches to it
  instead of opening a new one.
- All resolved: when the latest delivery of every alert (by fingerprint) of an incident says
  resolved, the policy decides: ``auto_resolve_on_alerts_resolved`` resolves the incident, otherwise
  the timeline notes that it waits for the flow's own verification.
"""

from __future__ import annotations

from collections import deque
from datetime import datetime, timedelta

from runbook.errors import InvalidTransition, LedgerError
from runbook.ledger import Ledger
from runbook.models import Alert, AlertStatus, IncidentStatus

FLAPPING_LABEL = "flapping"
MAX_TRACKED_KEYS = 100_000


class FlapTracker:
    """Counts status changes per dedup key within a sliding window (in memory, per gateway).

    Args:
        window: how far back changes count.
        changes: this many changes within the window is flapping.
    """

    def __init__(self, window: timedelta, changes: int = 2) -> None:
        self.window = window
        self.changes = changes
        self._last: dict[str, AlertStatus] = {}
        self._times: dict[str, deque[datetime]] = {}
        self._resolved: dict[str, tuple[int, datetime]] = {}

    def observe(self, alert: Alert, now: datetime) -> bool:
        """Note the alert's status; mark it (label) and return True if its key is flapping."""
        key = alert.dedup_key
        previous = self._last.get(key)
        if previous is None and len(self._last) >= MAX_TRACKED_KEYS:
            self._last.clear()  # memory bound: forgetting history only delays a flapping mark
            self._times.clear()
        self._last[key] = alert.status
        times = self._times.setdefault(key, deque())
        if previous is not None and previous != alert.status:
            times.append(now)
        while times and now - times[0] > self.window:
            times.popleft()
        flapping = len(times) >= self.changes
        if flapping:
            alert.labels[FLAPPING_LABEL] = "true"
        return flapping

    def is_flapping(self, key: str, now: datetime) -> bool:
        """Whether ``key`` has flapped within the window up to ``now``."""
        times = self._times.get(key, ())
        return sum(1 for t in times if now - t <= self.window) >= self.changes

    def remember_resolved(self, key: str, incident_id: int, at: datetime) -> None:
        """Remember that the gateway auto-resolved ``incident_id`` of ``key`` at ``at``.

        Args:
            key: the dedup key.
            incident_id: the incident resolved.
            at: when.
        """
        if key not in self._resolved and len(self._resolved) >= MAX_TRACKED_KEYS:
            self._resolved.clear()  # memory bound: forgetting only delays a flapping reopen
        self._resolved[key] = (incident_id, at)

    def take_resolved(self, key: str) -> tuple[int, datetime] | None:
        """The (incident, when) remembered for ``key``, forgotten as it is returned; None if none."""
        return self._resolved.pop(key, None)


def all_resolved(alerts: list[Alert]) -> bool:
    """True when the latest delivery of each alert (by fingerprint) is resolved."""
    latest: dict[str, AlertStatus] = {}
    for alert in alerts:  # oldest first, so the last one wins
        latest[alert.fingerprint or alert.dedup_key] = alert.status
    return bool(latest) and all(s == AlertStatus.RESOLVED for s in latest.values())


def settle_incident(ledger: Ledger, incident_id: int, *, auto_resolve: bool, flapping: bool) -> str:
    """After a resolved alert attached: resolve, wait, or do nothing (synchronous; run in a thread).

    Args:
        ledger: the open ledger.
        incident_id: the incident the resolved alert attached to.
        auto_resolve: the policy's ``auto_resolve_on_alerts_resolved``.
        flapping: the incident's key is flapping (never auto-resolved).

    Returns:
        ``"resolved"``, ``"waiting"``, ``"flapping"`` or ``"firing"`` (some alert still fires).
    """
    try:
        if not all_resolved(ledger.alerts_for(incident_id)):
            return "firing"
        if flapping:
            ledger.add_event(
                incident_id, "alerts_resolved", "every alert resolved, but they are flapping: "
                "the incident stays open", actor="gateway", data={"flapping": True},
            )  # fmt: skip
            return "flapping"
        if auto_resolve:
            incident = ledger.get_incident(incident_id)
            if incident.is_open:
                ledger.transition(
                    incident_id, IncidentStatus.RESOLVED, actor="gateway",
                    reason="every alert resolved (policy: auto_resolve_on_alerts_resolved)",
                )  # fmt: skip
            return "resolved"
        ledger.add_event(
            incident_id, "alerts_resolved", "every alert resolved; the incident waits for the "
            "flow's own verification", actor="gateway",
        )  # fmt: skip
        return "waiting"
    except (InvalidTransition, LedgerError):
        # someone moved it meanwhile (the flow resolved it, or it closed): theirs is the word
        return "skipped"
