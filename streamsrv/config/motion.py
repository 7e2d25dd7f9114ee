"""Motion gating per camera: which due frames are worth the detector.

A due frame goes to inference when something moved outside the masks, or when ``max_interval_s`` has passed since
the camera's last handed frame (so still objects, a person standing or a parked car, are refreshed that often).
Mask polygons use the zones' units: source pixels (``units: px``) or fractions of the frame (``units: norm``).

Example:
    >>> MotionConfig.model_validate({"mask": [{"polygon": [[0, 0], [0.2, 0], [0.2, 0.1]], "units": "norm"}]}).enabled
    True
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from pydantic import Field, model_validator

from streamsrv.config.base import StrictModel
from streamsrv.config.rules import MAX_POINTS, Point, Units, check_units, to_pixels


class MotionMaskConfig(StrictModel):
    """A polygon whose changes never count as motion (a clock, a tree, a TV screen)."""

    polygon: list[Point] = Field(min_length=3, max_length=MAX_POINTS, description="Vertices in order.")
    units: Units = Field("px", description="px: source-frame pixels; norm: fractions of width and height.")

    @model_validator(mode="after")
    def _check_polygon(self) -> MotionMaskConfig:
        check_units(self.polygon, self.units, "motion mask")
        return self

    def points_px(self, width: int, height: int) -> npt.NDArray[np.float64]:
        """Vertices ``(n, 2)`` in pixels of a frame of this size."""
        return to_pixels(self.polygon, self.units, width, height)


class MotionConfig(StrictModel):
    """Run the detector only on due frames with motion, and at least every ``max_interval_s``."""

    enabled: bool = Field(True, description="Gate detection on motion; off hands every due frame to inference.")
    threshold: int = Field(
        30, ge=1, le=255, description="Grey-level change (0-255) from the background that counts as a moving pixel."
    )
    min_area: float = Field(
        0.005,
        ge=0,
        le=1,
        description="Smallest moving region that counts, as a fraction of the frame area (smaller blobs are noise).",
    )
    mask: list[MotionMaskConfig] = Field(default_factory=list, description="Regions whose motion is ignored.")
    max_interval_s: float = Field(
        1.0,
        gt=0,
        le=600,
        description="A due frame is handed on at least this often without motion; at most tracker.lost_track_s, "
        "so a still object's track is refreshed before it would be dropped.",
    )


def refresh_error(motion: MotionConfig, lost_track_s: float) -> str | None:
    """Why ``motion`` cannot go with a tracker that keeps lost tracks ``lost_track_s``; None when it can.

    >>> refresh_error(MotionConfig(max_interval_s=3), lost_track_s=2.0) is not None
    True
    >>> refresh_error(MotionConfig(max_interval_s=3, enabled=False), lost_track_s=2.0) is None
    True
    """
    if not motion.enabled or motion.max_interval_s <= lost_track_s:
        return None
    return (
        f"motion.max_interval_s ({motion.max_interval_s}) exceeds tracker.lost_track_s ({lost_track_s}): a still "
        "object's track would be dropped between two forced detections"
    )
