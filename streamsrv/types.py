"""Data that flows between pipeline stages, defined once and imported everywhere.

Per-frame types are frozen dataclasses of numpy arrays (field names follow supervision's
``Detections``); pydantic is reserved for the edges (config, REST, wire format).

Example:
    >>> import numpy as np
    >>> d = Detections.empty()
    >>> len(d)
    0
    >>> d = Detections(xyxy=np.array([[0, 0, 10, 20]], np.float32),
    ...                confidence=np.array([0.9], np.float32), class_id=np.array([0], np.int32))
    >>> d.anchors("bottom_center").tolist()
    [[5.0, 20.0]]
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, fields
from typing import Literal, Self

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int32]
BoolArray = npt.NDArray[np.bool_]

Anchor = Literal["bottom_center", "center"]


class CameraState(enum.StrEnum):
    """Life cycle of a camera's source, owned by its decoder process."""

    STARTING = "starting"
    ONLINE = "online"
    RECONNECTING = "reconnecting"
    OFFLINE = "offline"
    ERROR = "error"


MotionBox = tuple[float, float, float, float]
"""A moving region of a frame, ``(x1, y1, x2, y2)`` as fractions of its width and height (the motion gate's)."""

Clock = Literal["live", "video"]
"""The clock a consumer of frames runs on. ``live`` (cameras): durations in ``mono_ts``, event times in ``wall_ts``.
``video`` (``streamsrv analyze``, clip jobs): both in ``video_ts``, the position in the file, so a clip gives the same
events however fast it is analysed."""


@dataclass(frozen=True, slots=True)
class FrameRef:
    """What is known about one decoded frame; made once when the frame is taken from its source and carried as is.

    Each clock field means one thing everywhere: ``wall_ts`` is epoch seconds when the frame was decoded,
    ``mono_ts`` is ``time.monotonic()`` then (system-wide, so comparable across processes), and ``video_ts`` is the
    frame's position in its stream (presentation time, seconds). ``seq`` numbers the frames handed on from one
    source (a camera's ring, a lane, a file), ``frame_index`` counts the source's frames, skipped ones included.
    ``motion`` holds the moving regions the camera's motion gate found in the frame (empty when it found none or
    the camera does not gate); the preview can draw them.

    >>> ref = FrameRef("door", seq=3, frame_index=10, width=640, height=360, wall_ts=1.7e9, mono_ts=50.0, video_ts=0.4)
    >>> ref.time_s("live"), ref.event_ts("live"), ref.time_s("video"), ref.event_ts("video")
    (50.0, 1700000000.0, 0.4, 0.4)
    """

    camera_id: str
    seq: int
    frame_index: int
    width: int
    height: int
    wall_ts: float
    mono_ts: float
    video_ts: float
    motion: tuple[MotionBox, ...] = ()

    def time_s(self, clock: Clock) -> float:
        """The frame's time on ``clock`` for measuring durations (dwell, loitering, track rates)."""
        return self.mono_ts if clock == "live" else self.video_ts

    def event_ts(self, clock: Clock) -> float:
        """The frame's time on ``clock`` for dating events."""
        return self.wall_ts if clock == "live" else self.video_ts


def _anchors(xyxy: FloatArray, anchor: Anchor) -> FloatArray:
    x = (xyxy[:, 0] + xyxy[:, 2]) / 2
    y = xyxy[:, 3] if anchor == "bottom_center" else (xyxy[:, 1] + xyxy[:, 3]) / 2
    return np.stack([x, y], axis=1).astype(np.float32)


@dataclass(frozen=True, slots=True)
class Detections:
    """Boxes of one frame in source-pixel ``xyxy`` coordinates; every other field has one value per box."""

    xyxy: FloatArray
    confidence: FloatArray
    class_id: IntArray

    def __post_init__(self) -> None:
        n = len(self.xyxy)
        shapes = {f.name: getattr(self, f.name).shape for f in fields(self)}
        if shapes.pop("xyxy") != (n, 4) or any(s != (n,) for s in shapes.values()):
            raise ValueError(f"{type(self).__name__} arrays disagree: xyxy {self.xyxy.shape}, others {shapes}")

    def __len__(self) -> int:
        return len(self.xyxy)

    @classmethod
    def empty(cls) -> Detections:
        return Detections(
            xyxy=np.zeros((0, 4), np.float32),
            confidence=np.zeros((0,), np.float32),
            class_id=np.zeros((0,), np.int32),
        )

    def filter(self, mask: BoolArray) -> Self:
        """The rows where ``mask`` is True, as the same type."""
        return type(self)(**{f.name: getattr(self, f.name)[mask] for f in fields(self)})

    def anchors(self, anchor: Anchor = "bottom_center") -> FloatArray:
        """Anchor points ``(n, 2)``: the bottom centre (feet) or the centre of each box."""
        return _anchors(self.xyxy, anchor)


@dataclass(frozen=True, slots=True)
class Tracks(Detections):
    """Tracked boxes of one frame: detections plus a per-camera ``track_id``.

    ``confirmed`` is False for tentative tracks (seen too few times); rules ignore them.
    """

    track_id: IntArray
    confirmed: BoolArray

    @classmethod
    def empty(cls) -> Tracks:
        return cls.untracked(Detections.empty())

    @classmethod
    def untracked(cls, detections: Detections) -> Tracks:
        """Detections that no tracker has seen (single images): ``track_id`` -1, not confirmed."""
        n = len(detections)
        return cls(
            xyxy=detections.xyxy,
            confidence=detections.confidence,
            class_id=detections.class_id,
            track_id=np.full(n, -1, np.int32),
            confirmed=np.zeros(n, np.bool_),
        )


@dataclass(slots=True)
class TrackQuality:
    """Counters of a camera's tracks since its tracker started; they only rise (Prometheus counters).

    ``tentative_started`` counts every track the tracker began (confirmed at birth or not), ``never_confirmed``
    those that ended before confirmation, ``confirmed_ended`` and ``confirmed_seconds`` the confirmed ones
    that ended and how long they were shown in all.
    """

    tentative_started: int = 0
    never_confirmed: int = 0
    confirmed_started: int = 0
    confirmed_ended: int = 0
    confirmed_seconds: float = 0.0

    def plus(self, other: TrackQuality) -> TrackQuality:
        """Both counts added: what a camera counted before an inference restart plus what it counts since.

        >>> total = TrackQuality(2, 1, 1, 1, 3.0).plus(TrackQuality(1, 0, 1, 0, 0.0))
        >>> total.tentative_started, total.confirmed_started, total.confirmed_seconds
        (3, 2, 3.0)
        """
        return TrackQuality(
            self.tentative_started + other.tentative_started,
            self.never_confirmed + other.never_confirmed,
            self.confirmed_started + other.confirmed_started,
            self.confirmed_ended + other.confirmed_ended,
            self.confirmed_seconds + other.confirmed_seconds,
        )


@dataclass(frozen=True, slots=True)
class FrameResult:
    """What the inference loop emits per processed frame; rules, preview and the API subscribe to it.

    ``frame`` is the processed frame's ``FrameRef``, as the decoder made it. ``labels`` maps ``class_id`` to the
    (aliased) label name for this model. ``frame_age_s`` is how old the frame was when inference started.
    """

    frame: FrameRef
    tracks: Tracks
    labels: dict[int, str] = field(default_factory=dict)
    frame_age_s: float = 0.0
    inference_ms: float = 0.0
    batch_size: int = 1

    @property
    def camera_id(self) -> str:
        """The camera (or lane) the frame came from: what results are routed by."""
        return self.frame.camera_id

    def label_of(self, class_id: int) -> str:
        return self.labels.get(int(class_id), str(class_id))

    def to_dict(self) -> dict[str, object]:
        """The JSON form of a frame record of ``streamsrv analyze`` and clip jobs; ``ts`` is the video time."""
        t, f = self.tracks, self.frame
        return {
            "camera_id": f.camera_id,
            "frame_index": f.frame_index,
            "ts": round(f.video_ts, 4),
            "width": f.width,
            "height": f.height,
            "tracks": [
                {
                    "track_id": int(t.track_id[i]),
                    "label": self.label_of(int(t.class_id[i])),
                    "confidence": round(float(t.confidence[i]), 4),
                    "bbox": [round(float(v), 1) for v in t.xyxy[i]],
                    "confirmed": bool(t.confirmed[i]),
                }
                for i in range(len(t))
            ],
        }
