"""ByteTrack through ultralytics' ``BYTETracker`` (with ``lap`` for the assignment).

Why this one: supervision 0.31 dropped its ByteTrack; ultralytics is already our model runtime, its
tracker keeps ids per instance (so cameras never share ids) and exposes unconfirmed tracks, which
we report as tentative. Boxes come from the matched detection, not the Kalman estimate, so they
agree exactly with what the detector saw.

The Kalman prediction spans the time measured between frames (``motion.predict``) instead of one fixed
step, and ids are given on confirmation (``TrackLedger``); both are measured in docs/accuracy.md.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import numpy.typing as npt
from ultralytics.trackers.basetrack import TrackState
from ultralytics.trackers.byte_tracker import BYTETracker, STrack

from streamsrv.config.models import TrackerConfig
from streamsrv.track.base import FrameRate, TrackLedger
from streamsrv.track.motion import REFERENCE_FPS, predict
from streamsrv.types import Detections, TrackQuality, Tracks


class _TrackerInput:
    """The results-like view BYTETracker expects: ``conf``, ``cls``, ``xywh``, boolean indexing."""

    def __init__(self, xyxy: npt.NDArray[np.float32], conf: npt.NDArray[np.float32], cls: npt.NDArray[np.int32]):
        self.xyxy, self.conf, self.cls = xyxy, conf, cls
        self.xywh = np.concatenate([(xyxy[:, :2] + xyxy[:, 2:]) / 2, xyxy[:, 2:] - xyxy[:, :2]], axis=1)

    def __len__(self) -> int:
        return len(self.conf)

    def __getitem__(self, mask: npt.NDArray[np.bool_]) -> _TrackerInput:
        return _TrackerInput(self.xyxy[mask], self.conf[mask], self.cls[mask])


class _TimedBYTETracker(BYTETracker):
    """BYTETracker whose prediction step is ``dt`` reference frames long, set before each update."""

    dt = 1.0

    def multi_predict(self, tracks: list[STrack]) -> None:
        if not tracks:
            return
        mean = np.asarray([t.mean for t in tracks], np.float64)
        covariance = np.asarray([t.covariance for t in tracks], np.float64)
        lost = np.array([t.state != TrackState.Tracked for t in tracks])
        mean[lost, 7] = 0  # as ultralytics: a lost box keeps moving but stops growing
        kf = self.kalman_filter
        mean, covariance = predict(mean, covariance, self.dt, (kf._std_weight_position, kf._std_weight_velocity))
        for t, m, c in zip(tracks, mean, covariance, strict=True):
            t.mean, t.covariance = m, c


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
        self._tracker = _TimedBYTETracker(args)
        self._ledger = TrackLedger()
        self._last_ts: float | None = None

    @property
    def quality(self) -> TrackQuality:
        return self._ledger.quality

    def update(self, detections: Detections, frame: npt.NDArray[np.uint8] | None, ts: float) -> Tracks:
        gap = ts - self._last_ts if self._last_ts is not None and ts > self._last_ts else 1.0 / self.rate.fps
        self._last_ts = ts
        self.rate.tick(ts)
        self._tracker.max_frames_lost = self.rate.frames_for(self.cfg.lost_track_s)
        self._tracker.dt = min(gap, self.cfg.lost_track_s) * REFERENCE_FPS
        self._tracker.update(_TrackerInput(detections.xyxy, detections.confidence, detections.class_id))
        live = self._tracker.tracked_stracks  # matched or started this frame; the rest are lost
        alive = {t.track_id for t in self._tracker.tracked_stracks} | {t.track_id for t in self._tracker.lost_stracks}
        confirmed = [bool(t.is_activated) for t in live]
        ids = self._ledger.show([int(t.track_id) for t in live], confirmed, alive, ts)
        if not live:
            return Tracks.empty()
        det_idx = np.array([int(t.idx) for t in live], np.int64)
        return Tracks(
            xyxy=detections.xyxy[det_idx],
            confidence=detections.confidence[det_idx],
            class_id=detections.class_id[det_idx],
            track_id=ids,
            confirmed=np.array(confirmed, np.bool_),
        )
