"""Builders for the per-frame data types, so tests say what is in a frame and not how the types are laid out.

Only this module knows the constructors of ``Tracks`` and ``FrameResult``: when their shape changes, it is the
one place to update.

>>> people = tracks(track(1, (10, 20, 50, 120)), track(2, (60, 20, 100, 120), confirmed=False))
>>> people.track_id.tolist(), people.confirmed.tolist()
([1, 2], [True, False])
>>> result = frame_result("door", people, ts=2.5)
>>> result.camera_id, result.frame.mono_ts, result.frame.video_ts, len(result.tracks)
('door', 2.5, 2.5, 2)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from streamsrv.types import FrameRef, FrameResult, Tracks

WALL_CLOCK_START = 1.7e9  # wall_ts of a frame at ts=0: a plausible Unix time
DEFAULT_SIZE = (1280, 720)
PERSON = {0: "person"}


@dataclass(frozen=True)
class Track:
    """One tracked object in a frame."""

    track_id: int
    xyxy: tuple[float, float, float, float]
    class_id: int = 0
    confidence: float = 0.9
    confirmed: bool = True


def track(
    track_id: int,
    xyxy: tuple[float, float, float, float] | list[float],
    *,
    class_id: int = 0,
    confidence: float = 0.9,
    confirmed: bool = True,
) -> Track:
    x1, y1, x2, y2 = xyxy
    return Track(track_id, (x1, y1, x2, y2), class_id, confidence, confirmed)


def tracks(*objects: Track) -> Tracks:
    """The ``Tracks`` of one frame holding ``objects`` (none: an empty frame)."""
    n = len(objects)
    return Tracks(
        xyxy=np.array([o.xyxy for o in objects], np.float32).reshape(n, 4),
        confidence=np.array([o.confidence for o in objects], np.float32),
        class_id=np.array([o.class_id for o in objects], np.int32),
        track_id=np.array([o.track_id for o in objects], np.int32),
        confirmed=np.array([o.confirmed for o in objects], np.bool_),
    )


def frame_result(
    camera_id: str,
    objects: Tracks,
    *,
    ts: float,
    index: int | None = None,
    size: tuple[int, int] = DEFAULT_SIZE,
    labels: Mapping[int, str] = PERSON,
    wall_ts: float | None = None,
) -> FrameResult:
    """Camera ``camera_id``'s frame at ``ts`` seconds, on the monotonic clock and in the video alike (the clocks
    rule engines measure time on, live and offline).

    ``index`` is its frame index and sequence number (default: ``ts`` in milliseconds); ``wall_ts`` the epoch
    seconds it was decoded at (default: ``WALL_CLOCK_START + ts``).
    """
    number = round(ts * 1000) if index is None else index
    width, height = size
    wall = WALL_CLOCK_START + ts if wall_ts is None else wall_ts
    frame = FrameRef(camera_id, number, number, width, height, wall_ts=wall, mono_ts=ts, video_ts=ts)
    return FrameResult(frame, objects, dict(labels))
