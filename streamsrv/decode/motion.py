"""Motion gating on due frames: a cheap background difference on a small grey copy decides what inference sees.

The frame is shrunk to ``WORK_WIDTH`` px wide and blurred; a running-average background is compared with it,
pixels that differ by more than ``threshold`` grey levels are moving, masked regions are cleared, and connected
regions of at least ``min_area`` of the frame are the motion boxes. ``MotionGate`` hands a due frame on when there is
motion or ``max_interval_s`` has passed since the last frame it handed on.

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

import numpy as np
import numpy.typing as npt
import shapely
from scipy import ndimage

from streamsrv.config.motion import MotionConfig
from streamsrv.decode.source import DecodedFrame
from streamsrv.types import MotionBox

WORK_WIDTH = 160
# How fast the background follows the scene, per checked frame: a person who stops blends in after a few
# seconds (and is then refreshed by max_interval_s), while a lighting change is absorbed as quickly.
BACKGROUND_ALPHA = 0.3
# numpy and scipy.ndimage rather than OpenCV: the decoder process stays ~45 MB smaller without cv2 (its budget is
# 150 MB), and on a 160-px grey frame the difference in speed does not show.
_BLUR_SIGMA = 1.1  # OpenCV's sigma for a 5x5 Gaussian kernel
_BLUR_TRUNCATE = 2 / _BLUR_SIGMA  # ... and its radius of 2 px
_GREY = np.array([0.114, 0.587, 0.299], np.float32)  # BGR weights
_EIGHT_WAY = np.ones((3, 3), np.bool_)


class MotionDetector:
    """Moving regions of successive frames of one camera, as normalised boxes."""

    def __init__(self, cfg: MotionConfig) -> None:
        self.cfg = cfg
        self._background: npt.NDArray[np.float32] | None = None
        self._keep: npt.NDArray[np.bool_] | None = None  # True where motion counts (outside the masks)

    def boxes(self, image: npt.NDArray[np.uint8]) -> list[MotionBox]:
        """Update the background with ``image`` (BGR) and return the moving regions in it."""
        h, w = image.shape[:2]
        small_h = max(1, round(h * WORK_WIDTH / w))
        rows = ((np.arange(small_h) + 0.5) * h / small_h).astype(np.intp)
        cols = ((np.arange(WORK_WIDTH) + 0.5) * w / WORK_WIDTH).astype(np.intp)
        small = image[rows[:, None], cols[None, :]].astype(np.float32) @ _GREY
        grey = ndimage.gaussian_filter(small, _BLUR_SIGMA, mode="mirror", truncate=_BLUR_TRUNCATE)
        if self._background is None or self._background.shape != grey.shape:
            self._background = grey
            self._keep = self._keep_mask(w, h, grey.shape)
            return []
        diff = np.abs(grey - self._background)
        self._background += BACKGROUND_ALPHA * (grey - self._background)
        moving = diff > self.cfg.threshold
        if self._keep is not None:
            moving &= self._keep
        joined = ndimage.binary_dilation(moving, _EIGHT_WAY, iterations=2)  # join the pieces of one moving body
        labels, count = ndimage.label(joined, _EIGHT_WAY)
        if count == 0:
            return []
        areas = np.bincount(labels.ravel(), minlength=count + 1)
        min_px = self.cfg.min_area * grey.size
        sh, sw = grey.shape
        return [
            (region[1].start / sw, region[0].start / sh, region[1].stop / sw, region[0].stop / sh)
            for label, region in enumerate(ndimage.find_objects(labels), start=1)
            if region is not None and areas[label] >= min_px
        ]

    def _keep_mask(self, w: int, h: int, shape: tuple[int, ...]) -> npt.NDArray[np.bool_] | None:
        if not self.cfg.mask:
            return None
        sh, sw = shape[0], shape[1]
        # pixel centres of the small frame, in the frame's own pixels, tested against each mask polygon
        ys, xs = np.mgrid[0:sh, 0:sw]
        xs_px, ys_px = (xs + 0.5) * w / sw, (ys + 0.5) * h / sh
        keep = np.ones((sh, sw), np.bool_)
        for m in self.cfg.mask:
            polygon = shapely.Polygon(m.points_px(w, h))
            keep &= ~shapely.intersects_xy(polygon, xs_px, ys_px)
        return keep


class MotionGate:
    """Decides, for each due frame of one camera, whether inference gets it; counts what it holds back."""

    def __init__(self, cfg: MotionConfig) -> None:
        self.cfg = cfg
        self.detector = MotionDetector(cfg) if cfg.enabled else None
        self.handed = 0
        self.skipped_no_motion = 0
        self.last_boxes: list[MotionBox] = []  # of the last checked frame; the decoder hands them on with it
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
