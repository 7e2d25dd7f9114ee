"""Per-camera statistics, owned by the main process.

Counters come from three places: the camera's frame ring (decoded, skipped, reconnects), the
inference process's status messages (processed, latest-frame-wins and stale drops), and the
results themselves (frame age, batch size). Rates are measured over a sliding window.
"""

from __future__ import annotations

import time
from collections import deque

import numpy as np
from pydantic import BaseModel, Field

from streamsrv.ipc.messages import CameraCounters
from streamsrv.types import CameraState, FrameResult

RATE_WINDOW_S = 5.0
# The decoder's counters that stats read from its frame ring's header.
RING_COUNTERS = ("decoded", "skipped", "dropped_behind", "reconnects", "packets", "latest_seq")
SAMPLE_WINDOW = 256


class RateMeter:
    """Events per second over the last ``window_s`` seconds, from a monotonically rising counter.

    >>> m = RateMeter(window_s=10)
    >>> m.sample(0, now=0.0); m.sample(50, now=2.0)
    >>> m.rate()
    25.0
    """

    def __init__(self, window_s: float = RATE_WINDOW_S) -> None:
        self.window_s = window_s
        self._samples: deque[tuple[float, int]] = deque()

    def sample(self, count: int, now: float | None = None) -> None:
        t = time.monotonic() if now is None else now
        self._samples.append((t, count))
        while len(self._samples) > 2 and t - self._samples[1][0] >= self.window_s:
            self._samples.popleft()

    def rate(self) -> float:
        if len(self._samples) < 2:
            return 0.0
        (t0, c0), (t1, c1) = self._samples[0], self._samples[-1]
        return max(0.0, (c1 - c0) / (t1 - t0)) if t1 > t0 else 0.0


class CameraStats(BaseModel):
    """A camera's health and throughput, as served by ``GET /api/cameras/{id}/stats``."""

    camera_id: str
    state: CameraState
    error: str | None = Field(None, description="Last error message (credentials redacted).")
    codec: str = ""
    decoder: str = Field("", description="Where the video is decoded: cpu, or the hardware decoder (cuda, vaapi, qsv).")
    width: int = 0
    height: int = 0
    source_fps: float = Field(0.0, description="Frame rate the source declares.")
    ingest_fps: float = Field(0.0, description="Packets received per second.")
    decoded_fps: float = Field(0.0, description="Frames decoded per second.")
    handed_fps: float = Field(0.0, description="Frames handed to inference per second (detect_fps).")
    processed_fps: float = Field(0.0, description="Frames inferred and tracked per second.")
    frames_decoded: int = 0
    frames_processed: int = 0
    dropped_skipped: int = Field(0, description="Decoded but not handed on (detect_fps spacing), by design.")
    dropped_behind: int = Field(
        0, description="Not decoded: the decoder fell max_lag_s behind real time and skipped to a keyframe."
    )
    dropped_latest_wins: int = Field(0, description="Overwritten by a newer frame before inference took it.")
    dropped_stale: int = Field(0, description="Older than the staleness budget when inference took it.")
    reconnects: int = 0
    decoder_restarts: int = 0
    frame_age_ms_p50: float = 0.0
    frame_age_ms_p95: float = 0.0
    batch_size_mean: float = 0.0
    inference_ms_mean: float = 0.0
    seconds_since_frame: float | None = None


class CameraStatsTracker:
    """Accumulates one camera's counters; not thread-safe on its own (the supervisor locks)."""

    def __init__(self, camera_id: str) -> None:
        self.camera_id = camera_id
        self.state = CameraState.STARTING
        self.error: str | None = None
        self.codec, self.width, self.height, self.source_fps = "", 0, 0, 0.0
        self.decoder = ""
        self.decoder_restarts = 0
        self.ring_counts = dict.fromkeys(RING_COUNTERS, 0)
        self.last_frame_mono: float | None = None
        # inference counters reset when the inference process restarts: keep what earlier ones counted
        self._infer_base = CameraCounters()
        self._infer_now = CameraCounters()
        self.ages_ms: deque[float] = deque(maxlen=SAMPLE_WINDOW)
        self.batches: deque[int] = deque(maxlen=SAMPLE_WINDOW)
        self.infer_ms: deque[float] = deque(maxlen=SAMPLE_WINDOW)
        self.meters = {k: RateMeter() for k in ("packets", "decoded", "handed", "processed")}

    def on_result(self, result: FrameResult) -> None:
        self.ages_ms.append(result.frame_age_s * 1e3)
        self.batches.append(result.batch_size)
        self.infer_ms.append(result.inference_ms)

    def on_inference_counters(self, counters: CameraCounters) -> None:
        self._infer_now = counters

    def on_inference_restart(self) -> None:
        now, base = self._infer_now, self._infer_base
        self._infer_base = CameraCounters(
            base.processed + now.processed,
            base.dropped_latest_wins + now.dropped_latest_wins,
            base.dropped_stale + now.dropped_stale,
        )
        self._infer_now = CameraCounters()

    @property
    def processed(self) -> int:
        return self._infer_base.processed + self._infer_now.processed

    def sample_rates(self, now: float) -> None:
        self.meters["packets"].sample(self.ring_counts["packets"], now)
        self.meters["decoded"].sample(self.ring_counts["decoded"], now)
        self.meters["handed"].sample(self.ring_counts["latest_seq"], now)
        self.meters["processed"].sample(self.processed, now)

    def snapshot(self) -> CameraStats:
        ages = np.array(self.ages_ms) if self.ages_ms else np.zeros(1)
        base, now = self._infer_base, self._infer_now
        return CameraStats(
            camera_id=self.camera_id,
            state=self.state,
            error=self.error,
            codec=self.codec,
            decoder=self.decoder,
            width=self.width,
            height=self.height,
            source_fps=round(self.source_fps, 3),
            ingest_fps=round(self.meters["packets"].rate(), 2),
            decoded_fps=round(self.meters["decoded"].rate(), 2),
            handed_fps=round(self.meters["handed"].rate(), 2),
            processed_fps=round(self.meters["processed"].rate(), 2),
            frames_decoded=self.ring_counts["decoded"],
            frames_processed=self.processed,
            dropped_skipped=self.ring_counts["skipped"],
            dropped_behind=self.ring_counts["dropped_behind"],
            dropped_latest_wins=base.dropped_latest_wins + now.dropped_latest_wins,
            dropped_stale=base.dropped_stale + now.dropped_stale,
            reconnects=self.ring_counts["reconnects"],
            decoder_restarts=self.decoder_restarts,
            frame_age_ms_p50=round(float(np.percentile(ages, 50)), 2),
            frame_age_ms_p95=round(float(np.percentile(ages, 95)), 2),
            batch_size_mean=round(float(np.mean(self.batches)), 3) if self.batches else 0.0,
            inference_ms_mean=round(float(np.mean(self.infer_ms)), 2) if self.infer_ms else 0.0,
            seconds_since_frame=(round(time.monotonic() - self.last_frame_mono, 3) if self.last_frame_mono else None),
        )
