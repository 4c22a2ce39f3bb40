"""Serving settings of `runbook gateway`: the garbage collector is tuned once before serving."""

from __future__ import annotations

import subprocess
import sys

from runbook.gateway.server import GC_YOUNG_THRESHOLD

PROBE = """
import gc, weakref
from runbook.gateway.server import tune_gc
import runbook.gateway.app  # what the gateway has loaded before it serves
tune_gc()
frozen = gc.get_freeze_count()
class Node: pass
a, b = Node(), Node()
a.other, b.other = b, a  # a cycle only the collector can free
alive = weakref.ref(a)
del a, b
junk = [[] for _ in range(5 * {threshold})]  # enough allocations for young collections to run
print(frozen, gc.get_threshold()[0], alive() is None)
"""


def test_tune_gc_freezes_the_startup_heap_and_still_collects_new_garbage() -> None:
    """After tune_gc, what the imports made is frozen (full collections no longer walk it), young
    collections run every GC_YOUNG_THRESHOLD allocations, and a cycle made afterwards is still
    freed without an explicit gc.collect(). Run in a child: the settings are process-wide."""
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(threshold=GC_YOUNG_THRESHOLD)],
        capture_output=True, text=True, check=True, timeout=120,
    )  # fmt: skip
    frozen, threshold, freed = out.stdout.split()
    assert int(frozen) > 10_000
    assert int(threshold) == GC_YOUNG_THRESHOLD
    assert freed == "True"
