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
from dataclasses import dataclass, field
from typing import Literal

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


@dataclass(frozen=True, slots=True)
class FrameRef:
    """A small reference to a decoded frame that lives in a camera's shared-memory ring.

    ``capture_ts`` is wall-clock epoch seconds (for events); ``mono_ts`` is ``time.monotonic()``
    in the decoder (for ages and durations); ``pts_s`` is the stream's presentation time.
    """

    camera_id: str
    seq: int
    slot: int
    frame_index: int
    width: int
    height: int
    capture_ts: float
    mono_ts: float
    pts_s: float


def _anchors(xyxy: FloatArray, anchor: Anchor) -> FloatArray:
    x = (xyxy[:, 0] + xyxy[:, 2]) / 2
    y = xyxy[:, 3] if anchor == "bottom_center" else (xyxy[:, 1] + xyxy[:, 3]) / 2
    return np.stack([x, y], axis=1).astype(np.float32)


@dataclass(frozen=True, slots=True)
class Detections:
    """Boxes of one frame in source-pixel ``xyxy`` coordinates."""

    xyxy: FloatArray
    confidence: FloatArray
    class_id: IntArray

    def __post_init__(self) -> None:
        n = len(self.xyxy)
        if self.xyxy.shape != (n, 4) or self.confidence.shape != (n,) or self.class_id.shape != (n,):
            raise ValueError(
                f"Detections arrays disagree: xyxy {self.xyxy.shape}, confidence "
                f"{self.confidence.shape}, class_id {self.class_id.shape}"
            )

    def __len__(self) -> int:
        return len(self.xyxy)

    @classmethod
    def empty(cls) -> Detections:
        return cls(
            xyxy=np.zeros((0, 4), np.float32),
            confidence=np.zeros((0,), np.float32),
            class_id=np.zeros((0,), np.int32),
        )

    def filter(self, mask: BoolArray) -> Detections:
        return Detections(self.xyxy[mask], self.confidence[mask], self.class_id[mask])

    def anchors(self, anchor: Anchor = "bottom_center") -> FloatArray:
        """Anchor points ``(n, 2)``: the bottom centre (feet) or the centre of each box."""
        return _anchors(self.xyxy, anchor)


@dataclass(frozen=True, slots=True)
class Tracks:
    """Tracked boxes of one frame: detections plus a per-camera ``track_id``.

    ``confirmed`` is False for tentative tracks (seen too few times); rules ignore them.
    """

    xyxy: FloatArray
    confidence: FloatArray
    class_id: IntArray
    track_id: IntArray
    confirmed: BoolArray

    def __post_init__(self) -> None:
        n = len(self.xyxy)
        shapes = (self.confidence.shape, self.class_id.shape, self.track_id.shape, self.confirmed.shape)
        if self.xyxy.shape != (n, 4) or any(s != (n,) for s in shapes):
            raise ValueError(f"Tracks arrays disagree: xyxy {self.xyxy.shape}, others {shapes}")

    def __len__(self) -> int:
        return len(self.xyxy)

    @classmethod
    def empty(cls) -> Tracks:
        return cls(
            xyxy=np.zeros((0, 4), np.float32),
            confidence=np.zeros((0,), np.float32),
            class_id=np.zeros((0,), np.int32),
            track_id=np.zeros((0,), np.int32),
            confirmed=np.zeros((0,), np.bool_),
        )

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

    def filter(self, mask: BoolArray) -> Tracks:
        return Tracks(
            self.xyxy[mask], self.confidence[mask], self.class_id[mask], self.track_id[mask], self.confirmed[mask]
        )

    def anchors(self, anchor: Anchor = "bottom_center") -> FloatArray:
        """Anchor points ``(n, 2)``: the bottom centre (feet) or the centre of each box."""
        return _anchors(self.xyxy, anchor)


@dataclass(frozen=True, slots=True)
class FrameResult:
    """What the inference loop emits per processed frame; rules, preview and the API subscribe to it.

    ``labels`` maps ``class_id`` to the (aliased) label name for this model.
    ``frame_age_s`` is how old the frame was when inference started.
    """

    camera_id: str
    frame_index: int
    seq: int
    capture_ts: float
    mono_ts: float
    width: int
    height: int
    tracks: Tracks
    labels: dict[int, str] = field(default_factory=dict)
    frame_age_s: float = 0.0
    inference_ms: float = 0.0
    batch_size: int = 1

    def label_of(self, class_id: int) -> str:
        return self.labels.get(int(class_id), str(class_id))

    def to_dict(self) -> dict[str, object]:
        """The JSON form used by ``streamsrv analyze`` output and the API."""
        t = self.tracks
        return {
            "camera_id": self.camera_id,
            "frame_index": self.frame_index,
            "ts": round(self.capture_ts, 4),
            "width": self.width,
            "height": self.height,
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
