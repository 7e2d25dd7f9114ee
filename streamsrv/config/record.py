"""Event clips: what a camera records around its events, and where and how long the server keeps the files."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator

from streamsrv.config.base import StrictModel

# The events made by objects; camera.online/offline and clip.ready never make a clip.
OBJECT_EVENT_TYPES = ("zone.enter", "zone.exit", "line.cross", "loiter.start", "loiter.end")


class CameraRecordConfig(StrictModel):
    """Per camera: cut an MP4 of the camera's own encoded stream (no re-encoding) around each of its events."""

    enabled: bool = Field(False, description="Record a clip for this camera's events.")
    pre_s: float = Field(
        5.0, ge=0, le=60, description="Video before the event; the clip starts at the keyframe before this."
    )
    post_s: float = Field(5.0, ge=0, le=600, description="Video after the event (after the last one it shares).")
    max_clip_s: float = Field(
        60.0, gt=0, le=3600, description="Longest clip; events that keep coming extend a clip up to this."
    )
    types: list[str] = Field(
        default_factory=lambda: list(OBJECT_EVENT_TYPES),
        description="Event types that make a clip: any of " + ", ".join(OBJECT_EVENT_TYPES) + ".",
    )

    @model_validator(mode="after")
    def _check(self) -> CameraRecordConfig:
        unknown = sorted(set(self.types) - set(OBJECT_EVENT_TYPES))
        if unknown:
            raise ValueError(f"record.types: {', '.join(unknown)} make no clip; use {', '.join(OBJECT_EVENT_TYPES)}")
        if self.max_clip_s < self.pre_s + self.post_s:
            raise ValueError(f"record.max_clip_s ({self.max_clip_s}) must cover pre_s + post_s")
        return self


class RecordConfig(StrictModel):
    """Server-wide: the directory event clips are written to and their retention."""

    dir: str = Field("clips", min_length=1, description="Where clips are written (relative to the config file).")
    max_bytes: int = Field(
        2 * 2**30, ge=0, description="Total bytes of clips kept; the oldest go first. A larger clip is skipped."
    )
    max_age_s: float = Field(7 * 86400.0, gt=0, description="Clips older than this are deleted.")


def clip_root(base_dir: Path | None, record: RecordConfig) -> Path:
    """The clip directory: ``record.dir``, relative to the config file's directory."""
    return Path(base_dir or ".") / record.dir
