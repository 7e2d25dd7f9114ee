"""A bounded in-memory store of event snapshots (JPEG bytes) keyed by event id.

Bounded three ways, oldest evicted first: by count, by total bytes, and by age. Ages use a monotonic clock
(an adjusted wall clock must neither purge nor immortalise snapshots).

Example:
    >>> store = SnapshotStore(max_count=2, max_bytes=1_000, max_age_s=60.0)
    >>> store.put("a" * 32, b"\\xff\\xd8jpeg")
    True
    >>> store.get("a" * 32)
    b'\\xff\\xd8jpeg'
    >>> store.get("b" * 32) is None
    True
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SnapshotStats:
    count: int
    bytes: int
    evicted: int
    rejected: int
    missed: int  # events with a box whose frame had left the camera's ring: no snapshot was drawn


class SnapshotStore:
    """Thread-safe; ``put`` from the pipeline, ``get`` from the API."""

    def __init__(
        self,
        max_count: int = 1000,
        max_bytes: int = 64 * 2**20,
        max_age_s: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_count, self.max_bytes, self.max_age_s = max_count, max_bytes, max_age_s
        self._clock = clock
        self._items: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._bytes = 0
        self._evicted = 0
        self._rejected = 0
        self._missed = 0
        self._lock = threading.Lock()

    def put(self, event_id: str, jpeg: bytes) -> bool:
        """Keep a snapshot; False (and counted) when it alone exceeds the byte bound."""
        with self._lock:
            if len(jpeg) > self.max_bytes or self.max_count == 0:
                self._rejected += 1
                return False
            old = self._items.pop(event_id, None)
            if old is not None:
                self._bytes -= len(old[1])
            self._items[event_id] = (self._clock(), jpeg)
            self._bytes += len(jpeg)
            self._evict()
            return True

    def miss(self, n: int = 1) -> None:
        """Count ``n`` snapshots that could not be drawn: their frame was gone (never replaced by a newer one)."""
        with self._lock:
            self._missed += n

    def get(self, event_id: str) -> bytes | None:
        with self._lock:
            self._evict()
            item = self._items.get(event_id)
            return None if item is None else item[1]

    def __len__(self) -> int:
        with self._lock:
            self._evict()
            return len(self._items)

    def stats(self) -> SnapshotStats:
        with self._lock:
            self._evict()
            return SnapshotStats(len(self._items), self._bytes, self._evicted, self._rejected, self._missed)

    def _evict(self) -> None:
        oldest_kept = self._clock() - self.max_age_s
        while self._items:
            stored_at, jpeg = next(iter(self._items.values()))
            if len(self._items) <= self.max_count and self._bytes <= self.max_bytes and stored_at >= oldest_kept:
                return
            self._items.popitem(last=False)
            self._bytes -= len(jpeg)
            self._evicted += 1
