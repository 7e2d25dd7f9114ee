"""Per-camera statistics, owned by the main process.

Counters come from three places: the camera's frame ring (decoded, skipped, reconnects), the
inference process's status messages (processed, latest-frame-wins and stale drops, how tracks started
and ended), and the results themselves (frame age, batch size). Rates are measured over a sliding window.
"""

from __future__ import annotations

import time
from collections import deque

import numpy as np
from pydantic import BaseModel, Field

from streamsrv.config.capacity import Priority
from streamsrv.ipc.messages import CameraCounters
from streamsrv.types import CameraState, FrameResult, TrackQuality

RATE_WINDOW_S = 5.0
TRACK_RATE_WINDOW_S = 60.0  # people arrive a few a minute: a 5 s window would mostly read 0
# The decoder's counters that stats read from its frame ring's header.
RING_COUNTERS = ("decoded", "skipped", "dropped_behind", "skipped_no_motion", "reconnects", "packets", "latest_seq")
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
        self._samples: deque[tuple[float, float]] = deque()

    def sample(self, count: float, now: float | None = None) -> None:
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
    skipped_no_motion: int = Field(
        0, description="Due but not handed on: no motion, and motion.max_interval_s not yet up since the last one."
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
    tracks_confirmed: int = Field(0, description="Tracks confirmed (shown with an id).")
    tracks_never_confirmed: int = Field(0, description="Tentative tracks that ended without being confirmed.")
    tracks_ended: int = Field(0, description="Confirmed tracks that ended.")
    track_seconds: float = Field(0.0, description="Time the ended confirmed tracks were followed, in all.")
    tracks_confirmed_per_min: float = Field(0.0, description="Confirmed tracks started per minute (last 60 s).")
    track_mean_s: float = Field(0.0, description="Mean time confirmed tracks were followed, of those that ended.")
    tracks_never_confirmed_share: float = Field(
        0.0, description="Share of tracks that ended tentative (never confirmed): detector noise, fragmentation."
    )
    relinks: int = Field(0, description="Tracks the rule engine re-linked to an object after a tracker id switch.")
    priority: Priority = Field("normal", description="Its priority under overload: high, normal or low.")
    detect_fps: float = Field(0.0, description="Configured detect_fps.")
    effective_detect_fps: float = Field(
        0.0, description="What its decoder paces to now: below detect_fps while the server degrades it under overload."
    )
    degraded: bool = Field(False, description="Its effective detect_fps is lowered because the server is overloaded.")
    max_frame_age_ms: float = Field(0.0, description="Its p95 frame-age target.")
    inference_ms_per_frame: float = Field(0.0, description="Its frames' share of their batches' inference time, mean.")
    decoder_cpu_cores: float = Field(0.0, description="CPU cores its decoder process uses (over the last 5 s).")


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
        self.meters["confirmed"] = RateMeter(TRACK_RATE_WINDOW_S)
        self.cpu = RateMeter()  # of the decoder process's CPU seconds: cores
        self.frame_ms: deque[float] = deque(maxlen=SAMPLE_WINDOW)  # each frame's share of its batch's time
        self.fresh_ages_ms: deque[float] = deque(maxlen=4 * SAMPLE_WINDOW)  # since the governor last took them
        self.priority: Priority = "normal"
        self.detect_fps, self.effective_fps, self.target_ms = 0.0, 0.0, 0.0  # set by Decoders

    def on_result(self, result: FrameResult) -> None:
        self.ages_ms.append(result.frame_age_s * 1e3)
        self.fresh_ages_ms.append(result.frame_age_s * 1e3)
        self.batches.append(result.batch_size)
        self.infer_ms.append(result.inference_ms)
        self.frame_ms.append(result.inference_ms / max(1, result.batch_size))

    def take_ages(self) -> tuple[float, ...]:
        """The frame ages of the results since the last call."""
        ages = tuple(self.fresh_ages_ms)
        self.fresh_ages_ms.clear()
        return ages

    @property
    def lost(self) -> int:
        """Frames handed on that inference never ran: overwritten by newer ones, or stale."""
        base, now = self._infer_base, self._infer_now
        return base.dropped_latest_wins + now.dropped_latest_wins + base.dropped_stale + now.dropped_stale

    @property
    def inference_ms_per_frame(self) -> float:
        return float(np.mean(self.frame_ms)) if self.frame_ms else 0.0

    def on_inference_counters(self, counters: CameraCounters) -> None:
        self._infer_now = counters

    def on_inference_restart(self) -> None:
        self._infer_base = self._infer_base.plus(self._infer_now)
        self._infer_now = CameraCounters()

    @property
    def processed(self) -> int:
        return self._infer_base.processed + self._infer_now.processed

    @property
    def tracks(self) -> TrackQuality:
        """How the camera's tracks started and ended, across inference restarts."""
        return self._infer_base.tracks.plus(self._infer_now.tracks)

    def sample_rates(self, now: float) -> None:
        self.meters["packets"].sample(self.ring_counts["packets"], now)
        self.meters["decoded"].sample(self.ring_counts["decoded"], now)
        self.meters["handed"].sample(self.ring_counts["latest_seq"], now)
        self.meters["processed"].sample(self.processed, now)
        self.meters["confirmed"].sample(self.tracks.confirmed_started, now)

    def snapshot(self) -> CameraStats:
        ages = np.array(self.ages_ms) if self.ages_ms else np.zeros(1)
        base, now = self._infer_base, self._infer_now
        tracks = self.tracks
        decided = tracks.never_confirmed + tracks.confirmed_started
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
            skipped_no_motion=self.ring_counts["skipped_no_motion"],
            dropped_latest_wins=base.dropped_latest_wins + now.dropped_latest_wins,
            dropped_stale=base.dropped_stale + now.dropped_stale,
            reconnects=self.ring_counts["reconnects"],
            decoder_restarts=self.decoder_restarts,
            frame_age_ms_p50=round(float(np.percentile(ages, 50)), 2),
            frame_age_ms_p95=round(float(np.percentile(ages, 95)), 2),
            batch_size_mean=round(float(np.mean(self.batches)), 3) if self.batches else 0.0,
            inference_ms_mean=round(float(np.mean(self.infer_ms)), 2) if self.infer_ms else 0.0,
            seconds_since_frame=(round(time.monotonic() - self.last_frame_mono, 3) if self.last_frame_mono else None),
            tracks_confirmed=tracks.confirmed_started,
            tracks_never_confirmed=tracks.never_confirmed,
            tracks_ended=tracks.confirmed_ended,
            track_seconds=round(tracks.confirmed_seconds, 3),
            tracks_confirmed_per_min=round(60 * self.meters["confirmed"].rate(), 2),
            track_mean_s=round(tracks.confirmed_seconds / tracks.confirmed_ended, 2) if tracks.confirmed_ended else 0.0,
            tracks_never_confirmed_share=round(tracks.never_confirmed / decided, 4) if decided else 0.0,
            priority=self.priority,
            detect_fps=self.detect_fps,
            effective_detect_fps=round(self.effective_fps, 3),
            degraded=self.effective_fps < self.detect_fps,
            max_frame_age_ms=self.target_ms,
            inference_ms_per_frame=round(self.inference_ms_per_frame, 3),
            decoder_cpu_cores=round(self.cpu.rate(), 4),
        )
