"""What a side-effecting task needs besides its block: which incident, which ledger, dry run or not.

A small pydantic model (not the flow's Runtime) so Prefect can inspect task inputs cheaply, and so no
credential ever travels in it.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from flows.runtime import get_ledger
from runbook.actions import ActionOutcome, action_key, run_action
from runbook.ledger import Ledger


class ActionContext(BaseModel):
    incident_id: int
    ledger_url: str | None = None
    dry_run: bool = False

    @property
    def ledger(self) -> Ledger:
        return get_ledger(self.ledger_url)

    def key(self, kind: str, target: str = "", *extra: str) -> str:
        return action_key(self.incident_id, kind, target, *extra)

    async def act(
        self, kind: str, target: str, plan: dict[str, Any], apply: Any, *, key: str | None = None
    ) -> ActionOutcome:
        """Run one side effect at most once under its idempotency key (see runbook.actions)."""
        return await run_action(
            self.ledger,
            incident_id=self.incident_id,
            key=key or self.key(kind, target),
            kind=kind,
            target=target,
            plan=plan,
            apply=apply,
            dry_run=self.dry_run,
        )
