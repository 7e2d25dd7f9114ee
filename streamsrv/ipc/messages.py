"""Small messages between the supervisor, decoder processes and the inference process.

Pixels never travel in these; they stay in each camera's ``FrameRing``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from streamsrv.types import CameraState, TrackQuality


@dataclass(frozen=True, slots=True)
class DecoderStatus:
    """A decoder's state change."""

    camera_id: str
    state: CameraState
    error: str | None = None
    codec: str = ""
    width: int = 0
    height: int = 0
    source_fps: float = 0.0
    ts: float = 0.0
    decoder: str = ""  # "cpu" or the hardware decoder (cuda, vaapi, qsv); set with the codec


@dataclass(frozen=True, slots=True)
class AddCamera:
    """Start inferring a camera (or a background lane) whose frames arrive in the ring at ``ring_path``.

    A background lane (uploaded images, clip jobs) is lossless — every frame is inferred in order and
    the producer waits for room — and runs only when no live camera has a frame waiting. Its frames are tracked on
    the ``video`` clock (their ``video_ts``), a camera's on the ``live`` one.
    """

    camera_id: str
    ring_path: str
    detect_fps: float
    background: bool = False
    track: bool = True


@dataclass(frozen=True, slots=True)
class RemoveCamera:
    camera_id: str


@dataclass(frozen=True, slots=True)
class CameraCounters:
    """Inference-side counters of one camera since the inference process started."""

    processed: int = 0
    dropped_latest_wins: int = 0  # overwritten in the ring before inference could take them
    dropped_stale: int = 0  # taken but older than the staleness budget, so not inferred
    tracks: TrackQuality = field(default_factory=TrackQuality)  # how its tracks started and ended

    def plus(self, other: CameraCounters) -> CameraCounters:
        """Both counts added: what a camera counted before an inference restart plus what it counts since."""
        return CameraCounters(
            self.processed + other.processed,
            self.dropped_latest_wins + other.dropped_latest_wins,
            self.dropped_stale + other.dropped_stale,
            self.tracks.plus(other.tracks),
        )


@dataclass(frozen=True, slots=True)
class HeapStats:
    """The C heap of this process, in bytes; ``trimmed_bytes`` adds up the RSS that trims gave back."""

    in_use_bytes: int  # allocated by the program, in the arenas and mmapped blocks
    free_bytes: int  # held by the arenas, free, still counted in RSS unless trimmed
    trims: int
    trimmed_bytes: int


@dataclass(frozen=True, slots=True)
class InferenceStatus:
    """Sent once the model is loaded, then about once a second."""

    backend: str
    device: str
    labels: dict[int, str]
    cameras: dict[str, CameraCounters] = field(default_factory=dict)
    results_dropped: int = 0
    heap: HeapStats | None = None  # the inference process's C heap (None where the C library is not glibc)
    ts: float = 0.0


@dataclass(frozen=True, slots=True)
class InferenceFailed:
    """The inference process cannot go on (e.g. the model does not load)."""

    error: str


@dataclass(frozen=True, slots=True)
class RecordRequest:
    """Ask a camera's decoder for a clip around an event seen in the frame at ``video_ts`` (its pts, seconds).

    A request that falls inside a clip still being collected joins it (one file for overlapping events).
    ``extend_only``: the event is still going on (an object loitering): keep its open clip going through
    ``video_ts + post_s``; never starts a clip.
    """

    event_id: str
    video_ts: float
    pre_s: float
    post_s: float
    max_clip_s: float
    extend_only: bool = False


@dataclass(frozen=True, slots=True)
class ClipStatus:
    """A decoder's word on a clip: ``ready`` (written to ``path``), ``skipped`` (disk full, unwritable) or
    ``failed`` (the stream went before the clip was complete, or no video was held for it)."""

    camera_id: str
    event_ids: tuple[str, ...]
    state: str
    path: str = ""
    bytes: int = 0
    duration_s: float = 0.0
    error: str | None = None
