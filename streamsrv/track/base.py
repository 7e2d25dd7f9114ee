"""The tracker protocol and the rate estimate that turns seconds into frames.

Trackers count in frames; the config counts in seconds. ``FrameRate`` measures the processed rate
from frame timestamps so a lost-track buffer of 2 s stays 2 s when inference falls behind or the
camera's rate changes.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import numpy.typing as npt

from streamsrv.types import Detections, Tracks


class Tracker(Protocol):
    """Assigns per-camera track ids; one instance per camera, never shared."""

    def update(self, detections: Detections, frame: npt.NDArray[np.uint8] | None, ts: float) -> Tracks:
        """Track one processed frame taken at ``ts`` (seconds, frame timestamp)."""
        ...


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
