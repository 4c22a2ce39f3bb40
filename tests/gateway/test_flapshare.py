"""Flap state: the in-process FlapTracker and the SharedFlapTracker behave alike, and the shared one
is one state for several spawned processes."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from typing import Any

import pytest

from runbook.gateway import lifecycle
from runbook.gateway.flapshare import FlapHandle, SharedFlapTracker
from runbook.gateway.lifecycle import FlapTracker
from runbook.models import Alert, AlertStatus

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)
WINDOW = timedelta(minutes=5)
Tracker = FlapTracker | SharedFlapTracker
Factory = Callable[..., Tracker]


def make_alert(status: str, key: str = "generic:k", n: int = 0) -> Alert:
    """An alert of ``key`` with the given status."""
    return Alert(source="generic", delivery_id=f"d{n}", dedup_key=key, status=AlertStatus(status))


def play(tracker: Tracker, statuses: list[str], key: str = "generic:k",
         start: datetime = T0, step: timedelta = MINUTE) -> list[bool]:  # fmt: skip
    """Observe one alert of ``key`` per status, ``step`` apart from ``start``; the flapping flags."""
    return [
        tracker.observe(make_alert(s, key, i), start + i * step) for i, s in enumerate(statuses)
    ]


def alternate(count: int) -> list[str]:
    """firing, resolved, firing, ... ``count`` statuses."""
    return ["firing" if i % 2 == 0 else "resolved" for i in range(count)]


@pytest.fixture(params=["in_process", "shared"])
def make(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[Factory]:
    """Builds a tracker of either kind: ``make(changes=2, window=WINDOW, keys=12)``, where ``keys``
    (a multiple of 3) is how many keys it holds before it clears."""
    made: list[SharedFlapTracker] = []

    def factory(changes: int = 2, window: timedelta = WINDOW, keys: int = 12) -> Tracker:
        if request.param == "in_process":
            monkeypatch.setattr(lifecycle, "MAX_TRACKED_KEYS", keys)
            return FlapTracker(window, changes)
        tracker = SharedFlapTracker.create(window, changes, capacity=keys * 4 // 3)
        made.append(tracker)
        return tracker

    yield factory
    for tracker in made:
        tracker.close()
        tracker.unlink()


def test_repeats_never_flap(make: Factory) -> None:
    """The same status again and again is no change: never flapping, never labelled."""
    tracker = make()
    alerts = [make_alert("firing", n=i) for i in range(10)]
    assert not any(tracker.observe(a, T0 + i * MINUTE) for i, a in enumerate(alerts))
    assert all("flapping" not in a.labels for a in alerts)
    assert not tracker.is_flapping("generic:k", T0 + 10 * MINUTE)


@pytest.mark.parametrize("changes", [1, 2, 3, 8])
def test_flapping_after_n_changes_within_the_window(make: Factory, changes: int) -> None:
    """The alert making the Nth change within the window flaps and is labelled; those before not."""
    tracker = make(changes=changes, window=timedelta(minutes=10))
    alerts = [make_alert(s, n=i) for i, s in enumerate(alternate(changes + 1))]
    flags = [tracker.observe(a, T0 + i * MINUTE) for i, a in enumerate(alerts)]
    assert flags == [False] * changes + [True]
    assert [a.labels.get("flapping") for a in alerts] == [None] * changes + ["true"]
    assert tracker.is_flapping("generic:k", T0 + changes * MINUTE)
    assert not tracker.is_flapping("generic:other", T0 + changes * MINUTE)


def test_changes_older_than_the_window_no_longer_count(make: Factory) -> None:
    """Two changes flap until the older is exactly one window old (inclusive), not 1 µs later
    (to the microsecond, where float seconds would round 300.000001 s the wrong way)."""
    us = timedelta(microseconds=1)
    window = WINDOW + us
    tracker = make(changes=2, window=window)
    start, step = T0 + 123457 * us, MINUTE + us
    assert play(tracker, alternate(3), start=start, step=step) == [False, False, True]
    edge = start + step + window  # the first change is exactly one window old
    assert tracker.is_flapping("generic:k", edge)
    assert not tracker.is_flapping("generic:k", edge + us)
    assert tracker.observe(make_alert("firing"), edge)
    assert not tracker.observe(make_alert("firing"), edge + us)
    assert not tracker.is_flapping("generic:k", edge + us)


def test_changes_spread_wider_than_the_window_never_flap(make: Factory) -> None:
    """A key changing every 6 minutes with a 5-minute window and 2 changes never flaps."""
    tracker = make(changes=2, window=WINDOW)
    assert not any(play(tracker, alternate(12), step=6 * MINUTE))


def test_keys_are_independent(make: Factory) -> None:
    """One key flapping marks neither another key's alerts nor its state."""
    tracker = make(changes=2)
    assert play(tracker, alternate(3), key="generic:a") == [False, False, True]
    calm = make_alert("resolved", "generic:b")
    assert not tracker.observe(make_alert("firing", "generic:b"), T0)
    assert not tracker.observe(calm, T0 + MINUTE)
    assert "flapping" not in calm.labels
    assert not tracker.is_flapping("generic:b", T0 + MINUTE)


def test_remember_and_take_resolved(make: Factory) -> None:
    """take_resolved returns what was remembered (latest wins) once, then None; flaps unaffected."""
    tracker = make(changes=2)
    at = datetime(2026, 3, 1, 12, 3, 4, 567891, tzinfo=UTC)
    assert tracker.take_resolved("generic:k") is None
    assert play(tracker, alternate(2)) == [False, False]
    tracker.remember_resolved("generic:k", 6, T0)
    tracker.remember_resolved("generic:k", 7, at)
    tracker.remember_resolved("generic:fresh", 8, T0)  # a key never observed
    assert tracker.observe(make_alert("firing"), T0 + 2 * MINUTE)  # history kept: 2nd change
    taken = tracker.take_resolved("generic:k")
    assert taken == (7, at) and taken[1].tzinfo is not None and taken[1].utcoffset() == timedelta(0)
    assert tracker.take_resolved("generic:k") is None
    assert tracker.take_resolved("generic:fresh") == (8, T0)
    assert tracker.is_flapping("generic:k", T0 + 2 * MINUTE)


def test_full_tracker_clears_flap_history(make: Factory) -> None:
    """At 12 keys nothing is forgotten; a 13th new key clears every key's history first."""
    tracker = make(changes=2, keys=12)
    assert play(tracker, alternate(3), key="generic:a") == [False, False, True]
    for i in range(11):
        tracker.observe(make_alert("firing", f"generic:k{i}"), T0 + 3 * MINUTE)
    assert tracker.is_flapping("generic:a", T0 + 3 * MINUTE)
    assert not tracker.observe(make_alert("firing", "generic:new"), T0 + 3 * MINUTE)
    assert not tracker.is_flapping("generic:a", T0 + 3 * MINUTE)
    # "a" starts over: its next status is no change, the one after is its first
    assert play(tracker, ["resolved", "firing"], key="generic:a", start=T0 + 4 * MINUTE) == [
        False,
        False,
    ]


def test_full_tracker_clears_remembered_incidents(make: Factory) -> None:
    """Remembered incidents are bounded the same way: a 13th new key forgets the first 12."""
    tracker = make(keys=12)
    for i in range(12):
        tracker.remember_resolved(f"generic:k{i}", i, T0)
    assert tracker.take_resolved("generic:k0") == (0, T0)
    tracker.remember_resolved("generic:k0", 0, T0)  # back to 12 keys
    tracker.remember_resolved("generic:k11", 11, T0 + MINUTE)  # known key: no clear
    assert tracker.take_resolved("generic:k5") == (5, T0)
    tracker.remember_resolved("generic:k5", 5, T0)
    tracker.remember_resolved("generic:new", 99, T0)
    assert [tracker.take_resolved(f"generic:k{i}") for i in range(12)] == [None] * 12
    assert tracker.take_resolved("generic:new") == (99, T0)


@pytest.mark.parametrize(("changes", "capacity"), [(0, 16), (9, 16), (-1, 16), (2, 3)])
def test_shared_refuses_impossible_sizes(changes: int, capacity: int) -> None:
    """changes outside 1..8 (the slot's limit) or fewer than 4 slots are refused, naming the limit."""
    with pytest.raises(ValueError, match=r"1\.\.8" if capacity == 16 else r"4\.\."):
        SharedFlapTracker.create(WINDOW, changes, capacity=capacity)


def test_attached_tracker_shares_state_and_cannot_unlink() -> None:
    """A tracker attached by handle sees the creator's state; only the creator may unlink."""
    parent = SharedFlapTracker.create(WINDOW, 2, capacity=64)
    child = SharedFlapTracker.attach(parent.handle())
    try:
        assert play(parent, alternate(2)) == [False, False]
        assert child.observe(make_alert("firing"), T0 + 2 * MINUTE)
        child.remember_resolved("generic:k", 3, T0)
        assert parent.take_resolved("generic:k") == (3, T0)
        with pytest.raises(RuntimeError, match="created"):
            child.unlink()
        wrong = FlapHandle(parent.handle().name, parent.handle().lock, WINDOW, 3, 64)
        with pytest.raises(ValueError, match="not this handle"):
            SharedFlapTracker.attach(wrong)
    finally:
        child.close()
        parent.close()
        parent.unlink()


SEQUENCE = alternate(4)  # process 0 plays the even steps, process 1 the odd ones


def take_turns(handle: FlapHandle, me: int, barrier: Barrier, results: Queue[Any]) -> None:
    """In a spawned process: observe this process's steps of SEQUENCE, in turn with the other."""
    tracker = SharedFlapTracker.attach(handle)
    try:
        for step, status in enumerate(SEQUENCE):
            if step % 2 == me:
                alert = make_alert(status, n=step)
                flapping = tracker.observe(alert, T0 + step * MINUTE)
                results.put((step, flapping, alert.labels.get("flapping")))
            barrier.wait(timeout=30)
        if me == 1:
            tracker.remember_resolved("generic:k", 42, T0 + 4 * MINUTE)
    finally:
        tracker.close()


@pytest.mark.timeout(90)
def test_two_spawned_processes_share_one_flap_state() -> None:
    """Two spawned workers alternating firing/resolved on one key: the second sees it flap at the
    3rd change; two separate in-process trackers fed the same alerts see no change at all."""
    ctx = multiprocessing.get_context("spawn")
    shared = SharedFlapTracker.create(timedelta(minutes=10), 3, capacity=64)
    try:
        barrier, results = ctx.Barrier(2), ctx.Queue()
        procs = [
            ctx.Process(target=take_turns, args=(shared.handle(), me, barrier, results))
            for me in range(2)
        ]
        for proc in procs:
            proc.start()
        seen = sorted(results.get(timeout=60) for _ in SEQUENCE)
        for proc in procs:
            proc.join(30)
        assert [p.exitcode for p in procs] == [0, 0]
        assert seen == [(0, False, None), (1, False, None), (2, False, None), (3, True, "true")]
        assert shared.is_flapping("generic:k", T0 + 3 * MINUTE)
        assert shared.take_resolved("generic:k") == (42, T0 + 4 * MINUTE)
    finally:
        shared.close()
        shared.unlink()
    separate = [FlapTracker(timedelta(minutes=10), 3) for _ in range(2)]
    flags = [
        separate[step % 2].observe(make_alert(status, n=step), T0 + step * MINUTE)
        for step, status in enumerate(SEQUENCE)
    ]
    assert flags == [False] * 4
    assert not any(t.is_flapping("generic:k", T0 + 3 * MINUTE) for t in separate)
