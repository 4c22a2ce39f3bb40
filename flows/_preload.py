"""Imported by `runbook serve`'s forkserver only (``flows.serve.FORKSERVER_PRELOAD``).

Work that every served run would otherwise repeat after the fork is done here once, before it:

- the pydantic models Prefect defers are built (``PrefectBaseModel`` sets ``defer_build``, so each
  process builds a model's validator on its first use: the run's flow run, task runs, states ...);
- what Prefect and its libraries import lazily on a run's path is imported: ``fastapi.encoders``
  (serializes a subflow's parameters); ``prefect.utilities.visualization``, which ``Flow.__call__``
  imports on every subflow call and which imports graphviz (in a served run's profile this import
  was the largest CPU cost from the parent's start to detect's first task); anyio's asyncio backend,
  the sqlite3 driver, the idna codec, Prefect's suspension observers and rich's emoji table (py-spy
  and ``-X importtime`` of served runs);
- matplotlib, which the RCA phase imports lazily to draw its chart (0.44 s of the RCA phase here),
  and a sample chart drawn in memory (``runbook.chart.warm_up``): fonts, glyphs and text layouts
  cached before the fork, not in each run's chart child;
- the phase flows' copies that runs made ahead start (``flows.phase_runs.warm``: each generates
  its parameter schema, ~5 ms of CPU in the middle of the phase before it);
- the vendor clients' shared TLS context (loading the CA bundle: 23 ms) is built, and so is the one
  Prefect's API clients share (``flows.prefect_tls``: ~40 ms per client before, eight per served run);
- last, the heap is collected and frozen (``freeze_heap``): a run's first full collection otherwise
  walks every object these imports made and stopped the event loop for 0.18 s in the middle of the
  detect phase (``runbook bench overhead``, timed with ``gc.callbacks``); frozen, the heap is also
  shared with the forked runs instead of copied when the collector touches it.

Nothing here opens a connection or starts a thread: the forkserver must stay safe to fork.
"""

from __future__ import annotations

import contextlib
import encodings.idna  # noqa: F401
import gc
import sqlite3  # noqa: F401

import anyio._backends._asyncio  # noqa: F401 - imported for its side effect (see above)
import fastapi.encoders  # noqa: F401
import matplotlib.backends.backend_agg  # noqa: F401 - what Figure.savefig draws with
import matplotlib.figure  # noqa: F401
import prefect._internal.observers  # noqa: F401
import prefect.utilities.visualization  # noqa: F401
import rich._emoji_codes  # noqa: F401
from pydantic import BaseModel
from pydantic._internal._mock_val_ser import MockValSer

import flows.digest  # noqa: F401 - every served flow's models exist before they are built
import flows.incident  # noqa: F401
import flows.reviews  # noqa: F401
import flows.watch  # noqa: F401
from flows.communicate import communicate
from flows.detect import detect
from flows.mitigate import mitigate
from flows.phase_runs import warm as warm_phase_runs
from flows.prefect_tls import warm as warm_prefect_tls
from flows.rca import rca
from flows.triage import triage
from runbook.chart import warm_up as warm_chart
from runbook.clients.base import shared_tls_context


def _subclasses(cls: type[BaseModel]) -> set[type[BaseModel]]:
    found: set[type[BaseModel]] = set()
    todo = [cls]
    while todo:
        for sub in todo.pop().__subclasses__():
            if sub not in found:
                found.add(sub)
                todo.append(sub)
    return found


def build_deferred_models() -> int:
    """Build every loaded pydantic model whose validator is still deferred; how many were built."""
    built = 0
    for model in _subclasses(BaseModel):
        if isinstance(model.__dict__.get("__pydantic_validator__"), MockValSer):
            # a model that cannot be built yet (an unresolved forward reference) is built on first
            # use, as it would have been anyway
            with contextlib.suppress(Exception):
                model.model_rebuild(force=True)
                built += 1
    return built


def freeze_heap() -> None:
    """Collect once, then move every surviving object out of the collector's sight for good."""
    gc.collect()
    gc.freeze()


build_deferred_models()
warm_phase_runs(detect, triage, mitigate, communicate, rca)
shared_tls_context()
warm_prefect_tls()
warm_chart()
freeze_heap()  # last: what the lines above made is frozen too
