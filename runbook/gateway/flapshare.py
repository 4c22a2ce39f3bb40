"""Flap state shared by the gateway's worker processes on one machine (``runbook gateway --workers``).

Each alert of a dedup key may land on any worker, so the status changes per key and the incident
the gateway auto-resolved per key live in one ``SharedFlapTracker`` in shared memory. It behaves as
the in-process ``FlapTracker`` (same ``observe`` / ``is_flapping`` / ``remember_resolved`` /
``take_resolved``); the supervisor ``create``s it and passes ``handle()`` to its ``spawn`` children,
which ``attach``.

Layout: a 16-byte header (slots in use, capacity, changes), then ``capacity`` fixed-size slots of an
open-addressing hash table (linear probing)::

    key hash u64 (0: empty) | status u8 | times kept u8 | resolved? u8 | 5 pad
    | last ``changes`` change times f64 (epoch s, oldest first) | incident i64 | resolved at f64

Slots are never removed one by one (so probing needs no tombstones): when a new key would make the
table over 3/4 full, the whole table is cleared first, as ``FlapTracker`` does at
``MAX_TRACKED_KEYS``: forgetting history only delays a flapping mark. Keys are told apart by a 64-bit
BLAKE2b hash; two keys colliding (about 1 in 4·10^9 at 100,000 keys) would share a history. Every
method holds one lock across processes for its whole read-modify-write (microseconds).
"""

from __future__ import annotations

import hashlib
import multiprocessing
import struct
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from multiprocessing.shared_memory import SharedMemory
from multiprocessing.synchronize import Lock
from typing import Any

from runbook.gateway.lifecycle import FLAPPING_LABEL
from runbook.models import Alert, AlertStatus

MAX_CHANGES = 8  # change times kept per slot: the slot has a fixed size
DEFAULT_CAPACITY = 131072  # slots: up to 98,304 keys, 12.6 MB with changes=8
_HEADER = struct.Struct("<QII")  # slots in use, capacity, changes
_USED = struct.Struct("<Q")
_ZEROS = memoryview(bytes(1 << 16))  # clears the table a chunk at a time, without a big allocation
_T = 4  # index of the first change time in an unpacked slot


def _hash(key: str) -> int:
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little") or 1


@dataclass(frozen=True)
class FlapHandle:
    """What a spawned worker needs to attach to the shared table (picklable while spawning).

    Attributes:
        name: the shared memory block's name.
        lock: the lock every method holds (a ``spawn`` context lock).
        window: how far back changes count.
        changes: this many changes within the window is flapping (1..8).
        capacity: slots in the table.
    """

    name: str
    lock: Lock
    window: timedelta
    changes: int
    capacity: int


class SharedFlapTracker:
    """``FlapTracker`` for several processes: status changes per dedup key in shared memory.

    Build it with ``create`` (the parent) or ``attach`` (a child), not directly.
    """

    def __init__(self, shm: SharedMemory, handle: FlapHandle, *, owner: bool) -> None:
        self.window = handle.window
        self.changes = handle.changes
        self._handle = handle
        self._shm = shm
        if shm.buf is None:  # only after close()
            raise ValueError(f"shared memory {shm.name} is closed")
        self._buf: memoryview = shm.buf
        self._lock = handle.lock
        self._owner = owner
        self._window_us = handle.window // timedelta(microseconds=1)
        self._capacity = handle.capacity
        self._limit = handle.capacity * 3 // 4
        self._slot = struct.Struct(f"<QBBB5x{handle.changes}dqd")
        self._pad = (0.0,) * handle.changes
        self._empty: tuple[Any, ...] = (0, 0, 0, 0, *self._pad, 0, 0.0)  # the fields of a new key

    @classmethod
    def create(
        cls, window: timedelta, changes: int, capacity: int = DEFAULT_CAPACITY
    ) -> SharedFlapTracker:
        """Allocate an empty table and its lock (in the parent, before starting the workers).

        Args:
            window: how far back changes count.
            changes: this many changes within the window is flapping.
            capacity: slots; the table is cleared when a new key would fill more than 3/4 of them.

        Returns:
            The tracker; ``unlink`` it once at exit.

        Raises:
            ValueError: ``changes`` is not 1..8, or ``capacity`` is not 4..2**32-1.
        """
        if not 1 <= changes <= MAX_CHANGES:
            raise ValueError(
                f"changes must be 1..{MAX_CHANGES} (a slot keeps at most {MAX_CHANGES} change "
                f"times), not {changes}"
            )
        if not 4 <= capacity < 2**32:
            raise ValueError(f"capacity must be 4..2**32-1 slots, not {capacity}")
        size = _HEADER.size + capacity * struct.calcsize(f"<QBBB5x{changes}dqd")
        shm = SharedMemory(create=True, size=size)
        lock = multiprocessing.get_context("spawn").Lock()
        tracker = cls(shm, FlapHandle(shm.name, lock, window, changes, capacity), owner=True)
        tracker._clear()
        return tracker

    @classmethod
    def attach(cls, handle: FlapHandle) -> SharedFlapTracker:
        """Open the parent's table in a spawned child.

        Args:
            handle: the parent's ``handle()``, passed as an argument of the ``spawn`` process.

        Returns:
            The tracker; ``close`` it when the worker stops.

        Raises:
            FileNotFoundError: the table is gone (the parent unlinked it).
            ValueError: the table does not have the handle's capacity and ``changes``.
        """
        shm = SharedMemory(name=handle.name)
        tracker = cls(shm, handle, owner=False)
        size = _HEADER.size + handle.capacity * tracker._slot.size
        header = _HEADER.unpack_from(tracker._buf)
        if shm.size < size or header[1:] != (handle.capacity, handle.changes):
            tracker.close()
            raise ValueError(f"shared memory {handle.name} is not this handle's flap table")
        return tracker

    def handle(self) -> FlapHandle:
        """What a ``spawn`` child passes to ``attach``."""
        return self._handle

    def close(self) -> None:
        """Unmap the table from this process (idempotent); it stays for the others."""
        self._shm.close()

    def unlink(self) -> None:
        """Destroy the table (the creating parent only, once, when every worker has stopped).

        Raises:
            RuntimeError: called in a process that attached rather than created it.
        """
        if not self._owner:
            raise RuntimeError("only the process that created the flap table unlinks it")
        self._shm.unlink()

    def observe(self, alert: Alert, now: datetime) -> bool:
        """Note the alert's status; mark it (label) and return True if its key is flapping."""
        code = 1 if alert.status == AlertStatus.FIRING else 2  # 0: no status yet
        t = now.timestamp()
        h = _hash(alert.dedup_key)
        with self._lock:
            off, slot = self._find(h)
            if slot is None:
                off, slot = self._insert(h, off), self._empty
            kept: tuple[float, ...] = slot[_T : _T + slot[2]]
            if slot[1] and slot[1] != code:
                kept = (*kept, t)[-self.changes :]
            n = len(kept)
            self._slot.pack_into(self._buf, off, h, code, n, slot[3], *kept, *self._pad[n:],
                                 slot[-2], slot[-1])  # fmt: skip
        flapping = self._flaps(kept, t)
        if flapping:
            alert.labels[FLAPPING_LABEL] = "true"
        return flapping

    def is_flapping(self, key: str, now: datetime) -> bool:
        """Whether ``key`` has flapped within the window up to ``now``."""
        with self._lock:
            _, slot = self._find(_hash(key))
        if slot is None:
            return False
        return self._flaps(slot[_T : _T + slot[2]], now.timestamp())

    def remember_resolved(self, key: str, incident_id: int, at: datetime) -> None:
        """Remember that the gateway auto-resolved ``incident_id`` of ``key`` at ``at``.

        Args:
            key: the dedup key.
            incident_id: the incident resolved.
            at: when (timezone-aware).
        """
        h = _hash(key)
        with self._lock:
            off, slot = self._find(h)
            if slot is None:
                off, slot = self._insert(h, off), self._empty
            self._slot.pack_into(self._buf, off, h, slot[1], slot[2], 1, *slot[_T:-2],
                                 incident_id, at.timestamp())  # fmt: skip

    def take_resolved(self, key: str) -> tuple[int, datetime] | None:
        """The (incident, when) remembered for ``key``, forgotten as it is returned; None if none."""
        with self._lock:
            off, slot = self._find(_hash(key))
            if slot is None or not slot[3]:
                return None
            self._slot.pack_into(self._buf, off, *slot[: _T - 1], 0, *slot[_T:-2], 0, 0.0)
        return slot[-2], datetime.fromtimestamp(slot[-1], UTC)

    def _flaps(self, kept: tuple[float, ...], now: float) -> bool:
        # at most ``changes`` times are kept: flapping when there are that many, all in the window;
        # compared in whole microseconds, as FlapTracker's timedeltas (exact until the year 2106)
        return len(kept) == self.changes and round((now - min(kept)) * 1e6) <= self._window_us

    def _find(self, h: int) -> tuple[int, tuple[Any, ...] | None]:
        """The offset of ``h``'s slot and its fields, or of the empty slot where it would go."""
        size, base, capacity = self._slot.size, _HEADER.size, self._capacity
        i = h % capacity
        while True:  # ends: the table is never more than 3/4 full
            off = base + i * size
            slot = self._slot.unpack_from(self._buf, off)
            if slot[0] == h:
                return off, slot
            if slot[0] == 0:
                return off, None
            i = i + 1 if i + 1 < capacity else 0

    def _insert(self, h: int, off: int) -> int:
        """Count a new key in (clearing a 3/4 full table first); returns the offset of its slot."""
        (used,) = _USED.unpack_from(self._buf)
        if used >= self._limit:
            self._clear()
            off, used = self._find(h)[0], 0
        _USED.pack_into(self._buf, 0, used + 1)
        return off

    def _clear(self) -> None:
        buf, step = self._buf, len(_ZEROS)
        for start in range(0, len(buf), step):
            end = min(start + step, len(buf))
            buf[start:end] = _ZEROS[: end - start]
        _HEADER.pack_into(buf, 0, 0, self._capacity, self.changes)
