"""How every vendor task retries: transient errors only, exponential backoff with jitter.

The clients already retry a transient failure a couple of times within one call, honouring
Retry-After; the task's retries cover longer outages (seconds to a minute). Permanent errors end the
task at once with the vendor's message.
"""

from __future__ import annotations

from typing import Any

from prefect import Task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import TaskRun
from prefect.states import State
from prefect.tasks import exponential_backoff

from runbook.errors import TransientError


def failure_of(state: State[Any]) -> BaseException | None:
    """The exception a Failed state carries (the engine builds it as ``Failed(data=exc)``)."""
    data = state.data
    if isinstance(data, BaseException):
        return data
    inner = getattr(data, "result", None)  # a persisted ResultRecord wraps it
    return inner if isinstance(inner, BaseException) else None


def retry_if_transient(task: Task[..., Any], task_run: TaskRun, state: State[Any]) -> bool:
    """Prefect retry condition: retry only TransientError (timeouts, 429/420, 5xx, connection);
    permanent errors and programming errors end the task at once."""
    return isinstance(failure_of(state), TransientError)


VENDOR_TASK: dict[str, Any] = {
    "retries": 4,
    "retry_delay_seconds": exponential_backoff(backoff_factor=1),
    "retry_jitter_factor": 0.5,
    "retry_condition_fn": retry_if_transient,
    "cache_policy": NO_CACHE,
    "timeout_seconds": 120,
}
"""Keyword arguments for ``@task(**VENDOR_TASK)`` on every task that calls a vendor."""
