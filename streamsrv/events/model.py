"""The event: one versioned pydantic model, the wire format on Redis, SSE and WebSocket alike.

``seq`` counts 1, 2, 3, ... per ``(camera_id, run_id)``: ``run_id`` names the producer instance (a rule engine
for one camera, from its start to its end), so a consumer tells a gap (``seq`` jumps within one run) from a
restart (a new ``run_id`` starting again at 1). Compatible additions (new optional fields, new types) keep
``schema_version``; anything else bumps it. Readers ignore fields they do not know.

Example:
    >>> seqr = EventSequencer("door", run_id="r1")
    >>> e = seqr.make("line.cross", ts=1700000000.0, track_id=7, label="person", confidence=0.9,
    ...               bbox=(10, 20, 50, 120), line="gate", direction="in")
    >>> e.seq, e.type, Event.from_json(e.to_json()) == e
    (1, 'line.cross', True)
"""

from __future__ import annotations

import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from streamsrv.config.models import CAMERA_ID_PATTERN

SCHEMA_VERSION: Literal[1] = 1
EventType = Literal[
    "zone.enter",
    "zone.exit",
    "line.cross",
    "loiter.start",
    "loiter.end",
    "camera.online",
    "camera.offline",
    "clip.ready",
]
ClipState = Literal["recording", "ready", "failed", "expired"]
EVENT_TYPES: tuple[EventType, ...] = (
    "zone.enter",
    "zone.exit",
    "line.cross",
    "loiter.start",
    "loiter.end",
    "camera.online",
    "camera.offline",
    "clip.ready",
)
_TRACK_FIELDS = ("track_id", "label", "confidence", "bbox")
_REQUIRED: dict[str, tuple[str, ...]] = {
    "zone.enter": (*_TRACK_FIELDS, "zone"),
    "zone.exit": (*_TRACK_FIELDS, "zone", "dwell_s"),
    "line.cross": (*_TRACK_FIELDS, "line", "direction"),
    "loiter.start": (*_TRACK_FIELDS, "zone", "dwell_s"),
    "loiter.end": (*_TRACK_FIELDS, "zone", "dwell_s"),
    "camera.online": (),
    "camera.offline": (),
    "clip.ready": ("event_id", "clip"),
}


class Clip(BaseModel):
    """An event's video clip: where to fetch it and how far it got."""

    model_config = ConfigDict(frozen=True, extra="ignore", json_schema_serialization_defaults_required=True)

    url: str = Field(description="GET it (API key applies; range requests work): /api/events/{id}/clip.mp4.")
    state: ClipState = Field(
        description="recording: being cut; ready: fetch it; failed: none was made (disk full, unwritable "
        "directory, no video held); expired: deleted by retention."
    )
    error: str | None = Field(None, description="Why it failed.")


class Event(BaseModel):
    """Something a rule or a camera reported; fields that do not apply to a type are null."""

    model_config = ConfigDict(
        frozen=True, extra="ignore", title="streamsrv event", json_schema_serialization_defaults_required=True
    )

    schema_version: Literal[1] = Field(SCHEMA_VERSION, description="Bumped on incompatible changes only.")
    id: str = Field(default_factory=lambda: uuid.uuid4().hex, pattern=r"^[0-9a-f]{32}$", description="Unique event id.")
    type: EventType = Field(description="What happened.")
    camera_id: str = Field(pattern=CAMERA_ID_PATTERN, description="The camera it happened on.")
    run_id: str = Field(min_length=1, max_length=64, description="The producer instance that numbered it.")
    seq: int = Field(ge=1, description="1, 2, 3, ... per (camera_id, run_id): a jump is a lost event.")
    ts: float = Field(
        description="When the frame it was decided on was decoded, Unix epoch seconds; in analyze output and clip "
        "jobs, its position in the video, seconds."
    )
    track_id: int | None = Field(None, description="Tracker id of the object (per camera).")
    label: str | None = Field(None, description="Object label, e.g. person.")
    confidence: float | None = Field(None, ge=0, le=1, description="Detection confidence in that frame.")
    bbox: tuple[float, float, float, float] | None = Field(
        None, description="Box x1, y1, x2, y2 in source-frame pixels."
    )
    zone: str | None = Field(None, description="Zone name (zone.* and loiter.* events).")
    line: str | None = Field(None, description="Tripwire name (line.cross).")
    direction: str | None = Field(None, description="Crossing direction name as configured, e.g. in / out.")
    dwell_s: float | None = Field(
        None, ge=0, description="Seconds inside the zone (zone.exit, loiter.*), measured on frame timestamps."
    )
    clip: Clip | None = Field(
        None, description="The event's clip, when its camera records (state recording here; clip.ready follows)."
    )
    event_id: str | None = Field(
        None, pattern=r"^[0-9a-f]{32}$", description="clip.ready: the event the clip belongs to (one per event)."
    )

    @field_validator("bbox")
    @classmethod
    def _round_bbox(cls, bbox: tuple[float, float, float, float] | None) -> tuple[float, float, float, float] | None:
        # float32 boxes print as 123.4000015258789; a hundredth of a pixel is plenty on the wire.
        return None if bbox is None else (round(bbox[0], 2), round(bbox[1], 2), round(bbox[2], 2), round(bbox[3], 2))

    @field_validator("confidence", "dwell_s")
    @classmethod
    def _round(cls, value: float | None) -> float | None:
        return None if value is None else round(value, 4)

    @model_validator(mode="after")
    def _fields_of_type(self) -> Event:
        missing = [name for name in _REQUIRED[self.type] if getattr(self, name) is None]
        if missing:
            raise ValueError(f"{self.type} event needs {', '.join(missing)}")
        return self

    def to_json(self) -> str:
        """Compact JSON with every field (null where it does not apply)."""
        return self.model_dump_json()

    @classmethod
    def from_json(cls, data: str | bytes) -> Event:
        return cls.model_validate_json(data)


def event_json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of the wire format, as published in docs/events.md.

    Every key is always present; which ones are non-null depends on ``type`` (the ``allOf`` rules).
    """
    schema = Event.model_json_schema(mode="serialization")
    schema["allOf"] = [
        {
            "if": {"properties": {"type": {"const": kind}}},
            "then": {"properties": {name: {"not": {"type": "null"}} for name in needed}},
        }
        for kind, needed in _REQUIRED.items()
        if needed
    ]
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": "streamsrv-event-v1", **schema}


class EventSequencer:
    """Numbers the events of one camera and producer run: seq 1, 2, 3, ... without gaps.

    Everything that produces events for a camera in one process should share its sequencer; a separate
    producer gets its own (another ``run_id``), so each sequence stays gap-free on its own.
    """

    def __init__(self, camera_id: str, run_id: str | None = None, first_seq: int = 1) -> None:
        # first_seq > 1: a cluster node continuing the camera's sequence from the previous owner (docs/cluster.md)
        self.camera_id = camera_id
        self.run_id = run_id or uuid.uuid4().hex[:12]
        self._next = first_seq

    @property
    def next_seq(self) -> int:
        return self._next

    def make(self, type: EventType, ts: float, **fields: Any) -> Event:
        """A new event with the next sequence number; ``fields`` are the type's own (zone, bbox, ...)."""
        event = Event(type=type, camera_id=self.camera_id, run_id=self.run_id, seq=self._next, ts=ts, **fields)
        self._next += 1
        return event
