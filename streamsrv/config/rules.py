"""Zone, tripwire and loitering definitions, inline in a camera's config or one YAML file per camera in ``zones/``.

Coordinates are source-frame pixels (``units: px``) or fractions of the frame (``units: norm``, 0–1, x to the
right, y down). Sizes that must survive a change of resolution or distance to the camera (hysteresis, radii)
are fractions of the track's box diagonal.

Tripwire directions: walk along the line from its first point to its last as drawn on screen; ``left_to_right``
names a crossing from the side on your left hand to the side on your right. A line drawn left to right across
the image (``[[0, 400], [1280, 400]]``) has the top of the image on its left, so ``left_to_right`` is moving
down the image.

Example:
    >>> rules = RulesConfig.model_validate({
    ...     "zones": [{"name": "door", "polygon": [[0, 0], [100, 0], [100, 100], [0, 100]]}],
    ...     "lines": [{"name": "gate", "points": [[0, 50], [100, 50]], "left_to_right": "in"}],
    ... })
    >>> rules.zones[0].anchor, rules.lines[0].right_to_left
    ('bottom_center', 'out')
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import numpy.typing as npt
import shapely
import yaml
from pydantic import (
    Field,
    TypeAdapter,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    model_validator,
)

from streamsrv.config.base import StrictModel, rename_deprecated
from streamsrv.config.yaml_source import validate_yaml
from streamsrv.errors import ConfigError
from streamsrv.fileio import atomic_write_text

RULE_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
Point = tuple[float, float]
Units = Literal["px", "norm"]
# Far more vertices than anyone draws; a bound keeps one request from making every save, reload and frame slow
# (a 10 000-point zone took the API over 30 s to store and check on a busy 2-core machine).
MAX_POINTS = 1000
# Frames are at most 8192 px wide; far larger coordinates (1e307 passed) made OpenCV spin for minutes drawing the
# preview and then fail (a 500 on snapshot.jpg, render threads that never end).
MAX_PIXEL_COORDINATE = 100_000


class ObjectFilter(StrictModel):
    """Which tracks a rule looks at; a track failing a filter in a frame counts as outside that frame."""

    labels: list[str] | None = Field(None, description="Only these labels; all when unset.")
    min_confidence: float = Field(0.0, ge=0, le=1, description="Minimum detection confidence.")
    min_box_area: float = Field(
        0.0, ge=0, description="Minimum box area: px² with units px, fraction of the frame area with units norm."
    )


class ZoneConfig(ObjectFilter):
    """A polygon; tracks enter and leave it, and may loiter in it."""

    name: str = Field(pattern=RULE_NAME_PATTERN, description="Unique among the camera's zones.")
    polygon: list[Point] = Field(
        min_length=3, max_length=MAX_POINTS, description="Vertices in order (closed implicitly)."
    )
    units: Units = Field("px", description="px: source-frame pixels; norm: fractions of width and height.")
    anchor: Literal["bottom_center", "center", "overlap"] = Field(
        "bottom_center",
        description="Inside when this box point is in the polygon; overlap: when min_overlap of the box is.",
    )
    min_overlap: float = Field(0.5, gt=0, le=1, description="Fraction of the box area inside (anchor: overlap).")
    min_frames: int = Field(
        2, ge=1, le=1000, description="An enter or exit counts once it has held this many consecutive frames."
    )
    min_s: float = Field(
        0.0, ge=0, le=3600, description="An enter or exit counts once it has held this long (frame time), too."
    )
    loiter_s: float | None = Field(
        None, gt=0, description="Raise loiter.start after a track has stayed inside this long; off when unset."
    )
    ignore_stationary: bool = Field(
        False, description="Stationary tracks neither enter, leave nor start loitering (parked cars)."
    )

    @model_validator(mode="before")
    @classmethod
    def _accept_deprecated_names(cls, data: Any) -> Any:
        return rename_deprecated(data, {"min_seconds": "min_s", "loiter_seconds": "loiter_s"}, "zones[]")

    @model_validator(mode="after")
    def _check_polygon(self) -> ZoneConfig:
        check_units(self.polygon, self.units, f"zone {self.name!r}")
        shape = shapely.Polygon(self.polygon)
        if not shape.is_valid:
            raise ValueError(
                f"zone {self.name!r}: polygon is not valid ({shapely.is_valid_reason(shape)}); "
                "reorder its points so edges do not cross"
            )
        if shape.area <= 0:
            raise ValueError(f"zone {self.name!r}: polygon has no area")
        return self

    def points_px(self, width: int, height: int) -> npt.NDArray[np.float64]:
        """Vertices ``(n, 2)`` in source pixels for a frame of this size."""
        return to_pixels(self.polygon, self.units, width, height)


class LineConfig(ObjectFilter):
    """A tripwire: a line or polyline counting crossings per direction and label."""

    name: str = Field(pattern=RULE_NAME_PATTERN, description="Unique among the camera's lines.")
    points: list[Point] = Field(
        min_length=2, max_length=MAX_POINTS, description="A line (2 points) or polyline, in drawing order."
    )
    units: Units = Field("px", description="px: source-frame pixels; norm: fractions of width and height.")
    anchor: Literal["bottom_center", "center"] = Field("bottom_center", description="Box point that crosses.")
    left_to_right: str = Field("in", pattern=RULE_NAME_PATTERN, description="Name of a left-to-right crossing.")
    right_to_left: str = Field("out", pattern=RULE_NAME_PATTERN, description="Name of a right-to-left crossing.")
    hysteresis: float = Field(
        0.1,
        ge=0,
        le=10,
        description="A crossing counts once the anchor is this far past the line (fraction of the box diagonal).",
    )
    cooldown_s: float = Field(
        2.0, ge=0, le=3600, description="A track counts at most once per direction within this time."
    )

    @model_validator(mode="before")
    @classmethod
    def _accept_deprecated_names(cls, data: Any) -> Any:
        return rename_deprecated(data, {"cooldown_seconds": "cooldown_s"}, "lines[]")

    @model_validator(mode="after")
    def _check_line(self) -> LineConfig:
        where = f"line {self.name!r}"
        check_units(self.points, self.units, where)
        if self.left_to_right == self.right_to_left:
            raise ValueError(f"{where}: left_to_right and right_to_left need different names")
        if any(a == b for a, b in zip(self.points, self.points[1:], strict=False)):
            raise ValueError(f"{where}: two consecutive points are equal")
        if not shapely.LineString(self.points).is_simple:
            raise ValueError(f"{where}: the polyline crosses itself, so its sides are ambiguous")
        return self

    def direction_name(self, sign: int) -> str:
        """The name of a crossing with this sign: +1 left to right, -1 right to left."""
        return self.left_to_right if sign > 0 else self.right_to_left

    def points_px(self, width: int, height: int) -> npt.NDArray[np.float64]:
        """Points ``(n, 2)`` in source pixels for a frame of this size."""
        return to_pixels(self.points, self.units, width, height)


# Field names before durations were spelled ``_s`` everywhere; files using them still load, with a warning.
_RULES_RENAMED = {
    "grace_seconds": "grace_s",
    "stationary_seconds": "stationary_s",
    "stationary_grace_seconds": "stationary_grace_s",
    "relink_seconds": "relink_s",
}


class RulesConfig(StrictModel):
    """All rules of one camera, and how tracks are followed between frames for them."""

    zones: list[ZoneConfig] = Field(default_factory=list)
    lines: list[LineConfig] = Field(default_factory=list)
    grace_s: float = Field(
        3.0, gt=0, le=600, description="A vanished track keeps its rule state (dwell, zones) this long."
    )
    stationary_s: float = Field(
        10.0, gt=0, le=86400, description="A track that has not moved for this long is stationary."
    )
    stationary_radius: float = Field(
        0.1, gt=0, le=10, description="'Not moved': within this fraction of its box diagonal."
    )
    stationary_grace_s: float = Field(
        60.0, gt=0, le=86400, description="A stationary track that vanished is remembered this long."
    )
    relink_radius: float = Field(
        0.5,
        ge=0,
        le=10,
        description="A new track id this close (fraction of box diagonal) to where a track vanished takes it over.",
    )
    relink_s: float = Field(
        2.0, ge=0, le=600, description="How soon after the vanishing such a new id must appear (an id switch)."
    )

    @model_validator(mode="before")
    @classmethod
    def _accept_deprecated_names(cls, data: Any) -> Any:
        return rename_deprecated(data, _RULES_RENAMED, "rules")

    @model_validator(mode="after")
    def _check_consistent(self) -> RulesConfig:
        if self.relink_s > self.grace_s:
            raise ValueError(
                f"relink_s ({self.relink_s}) cannot exceed grace_s ({self.grace_s}): "
                "a vanished track's state is gone by then"
            )
        for kind, names in (("zone", [z.name for z in self.zones]), ("line", [ln.name for ln in self.lines])):
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                raise ValueError(f"duplicate {kind} name(s): {', '.join(dupes)}")
        return self


_RULES_INLINE: TypeAdapter[RulesConfig] = TypeAdapter(RulesConfig)
_RULES_FILE: TypeAdapter[str] = TypeAdapter(Annotated[str, Field(pattern=r"\.ya?ml$")])


def _inline_or_file(value: Any, handler: ValidatorFunctionWrapHandler) -> RulesConfig | str | None:
    # One branch by the input's type, so a bad inline block reports only its own errors (a plain union would
    # add "input should be a valid string" to each).
    if value is None:
        return None
    if isinstance(value, str):
        return _RULES_FILE.validate_python(value)
    return _RULES_INLINE.validate_python(value)


RulesSetting = Annotated[RulesConfig | str | None, WrapValidator(_inline_or_file)]
"""A camera's ``rules``: inline, the path of a YAML file (``.yaml``/``.yml``), or none."""


def to_pixels(points: list[Point], units: Units, width: int, height: int) -> npt.NDArray[np.float64]:
    """Points as a float64 ``(n, 2)`` array in source pixels.

    >>> to_pixels([(0.5, 1.0)], "norm", 1280, 720).tolist()
    [[640.0, 720.0]]
    """
    xy = np.asarray(points, np.float64).reshape(-1, 2)
    return xy * np.array([width, height], np.float64) if units == "norm" else xy


def check_units(points: list[Point], units: Units, where: str) -> None:
    xy = np.asarray(points, np.float64)
    if units == "norm" and ((xy < 0) | (xy > 1)).any():
        raise ValueError(f"{where}: with units norm every coordinate must be within 0..1")
    if units == "px" and (xy < 0).any():
        raise ValueError(f"{where}: pixel coordinates cannot be negative")
    if units == "px" and (xy > MAX_PIXEL_COORDINATE).any():
        raise ValueError(f"{where}: pixel coordinates must be at most {MAX_PIXEL_COORDINATE}")


def parse_rules(text: str, where: str = "<rules>") -> RulesConfig:
    """Validate a rules YAML document; errors name the source, line, field and value like the main config."""
    return validate_yaml(text, where, RulesConfig, what="zones and lines")


def load_rules(path: str | Path) -> RulesConfig:
    """Read and validate a per-camera rules file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read rules file: {exc.strerror or exc}") from None
    return parse_rules(text, str(p))


def save_rules(rules: RulesConfig, path: str | Path) -> None:
    """Write a rules file (after a runtime edit), atomically: a reader sees the old file or the new, never half.

    Only values that differ from the defaults are written, so the file stays as short as a hand-written one.
    """
    p = Path(path)
    text = yaml.safe_dump(rules.model_dump(mode="json", exclude_defaults=True), sort_keys=False)
    atomic_write_text(p, text)


def resolve_rules(rules: RulesConfig | str | None, base_dir: Path | None, camera_id: str = "") -> RulesConfig:
    """A camera's ``rules`` setting as a model: inline as is, a path loaded (relative to ``base_dir``), none empty.

    >>> resolve_rules(None, None).zones
    []
    """
    if rules is None:
        return RulesConfig()
    if isinstance(rules, RulesConfig):
        return rules
    path = Path(rules)
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    try:
        return load_rules(path)
    except ConfigError as exc:
        raise ConfigError(f"camera {camera_id!r}: {exc}" if camera_id else str(exc)) from None
