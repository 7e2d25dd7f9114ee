"""Motion gating on due frames: a cheap background difference on a small grey copy decides what inference sees.

The frame is shrunk to ``WORK_WIDTH`` px wide and blurred; a running-average background (``cv2.accumulateWeighted``)
is compared with it, pixels that differ by more than ``threshold`` grey levels are moving, masked regions are
cleared, and connected regions of at least ``min_area`` of the frame are the motion boxes. ``MotionGate`` hands a
due frame on when there is motion or ``max_interval_s`` has passed since the last frame it handed on.

The same gate runs in the decoder process for live cameras and in ``streamsrv analyze`` and clip jobs (``gated``),
so offline runs skip exactly what a live camera would.

Example:
    >>> gate = MotionGate(MotionConfig())
    >>> still = np.zeros((90, 160, 3), np.uint8)
    >>> [gate.check(still, t / 10) for t in range(12)].count(True)  # the first frame, then once a second
    2
    >>> gate.skipped_no_motion
    10
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import cv2
import numpy as np
import numpy.typing as npt

from streamsrv.config.motion import MotionConfig
from streamsrv.decode.source import DecodedFrame

WORK_WIDTH = 160
# How fast the background follows the scene, per checked frame: a person who stops blends in after a few
# seconds (and is then refreshed by max_interval_s), while a lighting change is absorbed as quickly.
BACKGROUND_ALPHA = 0.3
_BLUR = (5, 5)
_JOIN = np.ones((3, 3), np.uint8)
# Box = (x1, y1, x2, y2) as fractions of the frame.
MotionBox = tuple[float, float, float, float]


class MotionDetector:
    """Moving regions of successive frames of one camera, as normalised boxes."""

    def __init__(self, cfg: MotionConfig) -> None:
        self.cfg = cfg
        self._background: npt.NDArray[np.float32] | None = None
        self._keep: npt.NDArray[np.uint8] | None = None  # 255 where motion counts (outside the masks)

    def boxes(self, image: npt.NDArray[np.uint8]) -> list[MotionBox]:
        """Update the background with ``image`` (BGR) and return the moving regions in it."""
        h, w = image.shape[:2]
        small_h = max(1, round(h * WORK_WIDTH / w))
        step = max(1, w // (2 * WORK_WIDTH))  # a strided view first: area-averaging a 720p frame costs ~1 ms
        small = cv2.cvtColor(cv2.resize(image[::step, ::step], (WORK_WIDTH, small_h)), cv2.COLOR_BGR2GRAY)
        grey = np.asarray(cv2.GaussianBlur(small, _BLUR, 0), np.float32)
        if self._background is None or self._background.shape != grey.shape:
            self._background = grey
            self._keep = self._keep_mask(w, h, grey.shape)
            return []
        diff = cv2.absdiff(grey, self._background)
        cv2.accumulateWeighted(grey, self._background, BACKGROUND_ALPHA)
        moving = (diff > self.cfg.threshold).astype(np.uint8) * 255
        if self._keep is not None:
            moving &= self._keep
        joined = cv2.dilate(moving, _JOIN, iterations=2)  # join the pieces of one moving body
        count, _, stats, _ = cv2.connectedComponentsWithStats(joined, connectivity=8)
        min_px = self.cfg.min_area * grey.size
        sw, sh = grey.shape[1], grey.shape[0]
        return [
            (x / sw, y / sh, (x + bw) / sw, (y + bh) / sh)
            for x, y, bw, bh, area in stats[1:count].tolist()
            if area >= min_px
        ]

    def _keep_mask(self, w: int, h: int, shape: tuple[int, ...]) -> npt.NDArray[np.uint8] | None:
        if not self.cfg.mask:
            return None
        keep = np.full(shape, 255, np.uint8)
        scale = np.array([shape[1] / w, shape[0] / h])
        for m in self.cfg.mask:
            cv2.fillPoly(keep, [np.round(m.points_px(w, h) * scale).astype(np.int32)], 0)
        return keep


class MotionGate:
    """Decides, for each due frame of one camera, whether inference gets it; counts what it holds back."""

    def __init__(self, cfg: MotionConfig) -> None:
        self.cfg = cfg
        self.detector = MotionDetector(cfg) if cfg.enabled else None
        self.handed = 0
        self.skipped_no_motion = 0
        self.last_boxes: list[MotionBox] = []
        self._last_handed_ts: float | None = None

    def check(self, image: npt.NDArray[np.uint8], ts: float) -> bool:
        """True when the frame at ``ts`` (seconds, any steady clock) goes to inference."""
        if self.detector is None:
            self.handed += 1
            return True
        self.last_boxes = self.detector.boxes(image)
        last = self._last_handed_ts
        overdue = last is None or ts - last >= self.cfg.max_interval_s - 1e-3 or ts < last
        if self.last_boxes or overdue:
            self._last_handed_ts = ts
            self.handed += 1
            return True
        self.skipped_no_motion += 1
        return False


def gated(frames: Iterable[DecodedFrame], gate: MotionGate) -> Iterator[DecodedFrame]:
    """The frames ``gate`` hands on, by their video time (offline runs: analyze, clip jobs)."""
    return (frame for frame in frames if gate.check(frame.image, frame.video_ts))
