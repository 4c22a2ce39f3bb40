"""Approval of an action in the Prefect UI: the flow pauses with a typed form (approve or reject)."""

from __future__ import annotations

from datetime import timedelta

from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from pydantic import Field


class Approval(RunInput):
    """The form a person fills in the Prefect UI to let an action run, or not."""

    approve: bool = Field(description="Tick to let the action run; leave unticked to reject it.")
    approver: str = Field(description="Who decides (name or handle), recorded in the timeline.")
    reason: str = Field("", description="Why; recorded in the timeline and the RCA.")


def approval_url() -> str | None:
    """The Prefect UI page of this flow run, where its pause shows the approval form (None outside a
    run or without a UI address)."""
    from prefect.runtime import flow_run
    from prefect.settings import PREFECT_UI_URL

    ui, run_id = PREFECT_UI_URL.value(), flow_run.id
    if not ui or not run_id:
        return None
    return f"{str(ui).rstrip('/')}/runs/flow-run/{run_id}"


async def ask_approval(key: str, wait: timedelta) -> Approval | None:
    """Pause this flow run until someone answers the form, or the timeout passes (then None)."""
    try:
        answer: Approval = await pause_flow_run(  # type: ignore[misc]
            wait_for_input=Approval,  # type: ignore[arg-type]
            timeout=max(1, int(wait.total_seconds())),
            poll_interval=1,  # start the approved action within a second of the answer
            key=key,
        )
    except FlowPauseTimeout:
        return None
    return answer
