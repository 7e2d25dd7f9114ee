"""ByteTrack through ultralytics' ``BYTETracker`` (with ``lap`` for the assignment).

Why this one: supervision 0.31 dropped its ByteTrack; ultralytics is already our model runtime, its
tracker keeps ids per instance (so cameras never share ids) and exposes unconfirmed tracks, which
we report as tentative. Boxes come from the matched detection, not the Kalman estimate, so they
agree exactly with what the detector saw.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import numpy.typing as npt
from ultralytics.trackers.byte_tracker import BYTETracker

from streamsrv.config.models import TrackerConfig
from streamsrv.track.base import FrameRate
from streamsrv.types import Detections, Tracks


class _TrackerInput:
    """The results-like view BYTETracker expects: ``conf``, ``cls``, ``xywh``, boolean indexing."""

    def __init__(self, xyxy: npt.NDArray[np.float32], conf: npt.NDArray[np.float32], cls: npt.NDArray[np.int32]):
        self.xyxy, self.conf, self.cls = xyxy, conf, cls
        self.xywh = np.concatenate([(xyxy[:, :2] + xyxy[:, 2:]) / 2, xyxy[:, 2:] - xyxy[:, :2]], axis=1)

    def __len__(self) -> int:
        return len(self.conf)

    def __getitem__(self, mask: npt.NDArray[np.bool_]) -> _TrackerInput:
        return _TrackerInput(self.xyxy[mask], self.conf[mask], self.cls[mask])


class ByteTracker:
    """ByteTrack for one camera; the lost-track buffer is kept at ``lost_track_s`` seconds."""

    def __init__(self, cfg: TrackerConfig, fps: float) -> None:
        self.cfg = cfg
        self.rate = FrameRate(fps)
        args = SimpleNamespace(
            track_high_thresh=cfg.high_thresh,
            track_low_thresh=cfg.low_thresh,
            new_track_thresh=cfg.new_track_thresh,
            track_buffer=self.rate.frames_for(cfg.lost_track_s),
            match_thresh=cfg.match_thresh,
            fuse_score=True,
        )
        self._tracker = BYTETracker(args)

    def update(self, detections: Detections, frame: npt.NDArray[np.uint8] | None, ts: float) -> Tracks:
        self.rate.tick(ts)
        self._tracker.max_frames_lost = self.rate.frames_for(self.cfg.lost_track_s)
        self._tracker.update(_TrackerInput(detections.xyxy, detections.confidence, detections.class_id))
        live = self._tracker.tracked_stracks  # matched or started this frame; the rest are lost
        if not live:
            return Tracks.empty()
        det_idx = np.array([int(t.idx) for t in live], np.int64)
        return Tracks(
            xyxy=detections.xyxy[det_idx],
            confidence=detections.confidence[det_idx],
            class_id=detections.class_id[det_idx],
            track_id=np.array([t.track_id for t in live], np.int32),
            confirmed=np.array([t.is_activated for t in live], np.bool_),
        )
