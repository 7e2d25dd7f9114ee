"""The tracker protocol, the rate estimate that turns seconds into frames, and the ids users see.

Trackers count in frames; the config counts in seconds. ``FrameRate`` measures the processed rate
from frame timestamps so a lost-track buffer of 2 s stays 2 s when inference falls behind or the
camera's rate changes. ``TrackLedger`` gives the ids users see (dense, on confirmation) and counts
how tracks start and end, for the per-camera track-quality metrics.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from streamsrv.types import Detections, IntArray, TrackQuality, Tracks


class Tracker(Protocol):
    """Assigns per-camera track ids; one instance per camera, never shared."""

    @property
    def quality(self) -> TrackQuality:
        """How tracks started and ended so far."""
        ...

    def update(self, detections: Detections, frame: npt.NDArray[np.uint8] | None, ts: float) -> Tracks:
        """Track one processed frame taken at ``ts`` (seconds, frame timestamp)."""
        ...


@dataclass(slots=True)
class _Life:
    first_ts: float
    last_ts: float
    public_id: int = 0  # 0 until first shown confirmed


class TrackLedger:
    """The ids users see, and the life of each tracker track.

    A track gets its public id the first time it is shown confirmed, counting from 1 per camera, so "person #12"
    is the twelfth confirmed person. A tentative track shows as the negative of the tracker's own id: unique, never
    taken for a person, and trackers' tentative tracks no longer use up ids.

    >>> ledger = TrackLedger()
    >>> ledger.show([7, 9], [False, True], alive={7, 9}, ts=0.0).tolist()
    [-7, 1]
    >>> ledger.show([7], [True], alive={7}, ts=0.5).tolist()  # 9 ended: shown confirmed for 0 s
    [2]
    >>> q = ledger.quality
    >>> q.tentative_started, q.confirmed_started, q.confirmed_ended, q.never_confirmed
    (2, 2, 1, 0)
    """

    def __init__(self) -> None:
        self.quality = TrackQuality()
        self._lives: dict[int, _Life] = {}
        self._next_public = 1

    def show(self, tracker_ids: list[int], confirmed: list[bool], alive: set[int], ts: float) -> IntArray:
        """Public ids of the tracks shown in a frame at ``ts``; ``alive`` are all ids the tracker still keeps
        (shown, hidden or lost): the others have ended."""
        q = self.quality
        out = np.empty(len(tracker_ids), np.int32)
        for i, (tid, conf) in enumerate(zip(tracker_ids, confirmed, strict=True)):
            life = self._lives.get(tid)
            if life is None:
                life = self._lives[tid] = _Life(ts, ts)
                q.tentative_started += 1
            life.last_ts = ts
            if conf and not life.public_id:
                life.public_id, self._next_public = self._next_public, self._next_public + 1
                life.first_ts = ts
                q.confirmed_started += 1
            out[i] = life.public_id or -tid
        for tid in [t for t in self._lives if t not in alive]:
            life = self._lives.pop(tid)
            if life.public_id:
                q.confirmed_ended += 1
                q.confirmed_seconds += life.last_ts - life.first_ts
            else:
                q.never_confirmed += 1
        return out


class FrameRate:
    """Exponentially smoothed frames/s from frame timestamps.

    >>> r = FrameRate(initial_fps=5.0)
    >>> for t in [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3, 1.4]: r.tick(t)
    >>> round(r.fps)
    10
    """

    def __init__(self, initial_fps: float, smoothing: float = 0.2) -> None:
        self.fps = initial_fps
        self._alpha = smoothing
        self._last: float | None = None

    def tick(self, ts: float) -> None:
        if self._last is not None and ts > self._last:
            self.fps += self._alpha * (1.0 / (ts - self._last) - self.fps)
        self._last = ts

    def frames_for(self, seconds: float) -> int:
        return max(1, round(seconds * self.fps))
