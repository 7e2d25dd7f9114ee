"""Loitering: an object continuously inside a zone for at least ``loiter_s`` of frame time.

Dwell is measured from the frame timestamp at which the zone stay began (``Membership.since_mono``), never
from frame counts or the wall clock, so it means the same at any fps and under frame skipping. A stay only
ends with a committed exit or when the object is pruned, so a track lost for less than the grace time (or
re-linked after an id switch) keeps its dwell.

Example:
    >>> timer = LoiterTimer(loiter_s=30.0)
    >>> timer.check(key=7, since_mono=100.0, now_mono=129.0)
    False
    >>> timer.check(key=7, since_mono=100.0, now_mono=130.5)
    True
    >>> timer.end(7)
    True
"""

from __future__ import annotations

from collections.abc import Iterator


class LoiterTimer:
    """Which objects of one zone are loitering."""

    def __init__(self, loiter_s: float) -> None:
        self.loiter_s = loiter_s
        self._loitering: set[int] = set()

    def check(self, key: int, since_mono: float, now_mono: float) -> bool:
        """True exactly once per stay: when an object inside since ``since_mono`` reaches the threshold."""
        if key in self._loitering or now_mono - since_mono < self.loiter_s:
            return False
        self._loitering.add(key)
        return True

    def __len__(self) -> int:
        return len(self._loitering)

    def __iter__(self) -> Iterator[int]:
        """The keys of the objects loitering now."""
        return iter(self._loitering)

    def end(self, key: int) -> bool:
        """The stay is over; True if the object was loitering (a ``loiter.end`` is due)."""
        if key in self._loitering:
            self._loitering.remove(key)
            return True
        return False

    def adopt(self, old: LoiterTimer) -> None:
        """Keep who is loitering when the zone is edited at runtime."""
        self._loitering = old._loitering
