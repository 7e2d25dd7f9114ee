"""Zones: which objects are inside a polygon, with enter/exit debounced so jitter on the boundary cannot flap.

A change of state (outside -> inside or back) counts once it has held for ``min_frames`` consecutive
observations and ``min_s`` of frame time; it is dated from its first frame, so dwell times do not
include the debounce delay. Objects are only remembered while inside or while a change is pending.

Example:
    >>> from streamsrv.config.rules import ZoneConfig
    >>> zone = Zone(ZoneConfig(name="door", polygon=[(0, 0), (100, 0), (100, 100), (0, 100)], min_frames=2))
    >>> zone.update([7], np.array([True]), now_mono=0.0)
    []
    >>> zone.update([7], np.array([True]), now_mono=0.2)
    [ZoneChange(key=7, entered=True, dwell_s=0.0)]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import shapely

from streamsrv.config.rules import ZoneConfig
from streamsrv.rules.geometry import anchors, contains, overlap_ratios, polygon
from streamsrv.rules.tracks import FrameTracks

BoolArray = npt.NDArray[np.bool_]


@dataclass(slots=True)
class Membership:
    """One object's debounced state in one zone; ``since_mono`` dates the current state."""

    inside: bool = False
    since_mono: float = 0.0
    pending_since_mono: float | None = None
    pending_frames: int = 0


@dataclass(frozen=True, slots=True)
class ZoneChange:
    """A committed enter or exit; ``dwell_s`` is the time spent inside (exits only, 0 for enters)."""

    key: int
    entered: bool
    dwell_s: float


class Zone:
    """A polygon with its filters and the debounced membership of every object."""

    def __init__(self, cfg: ZoneConfig) -> None:
        self.cfg = cfg
        self._members: dict[int, Membership] = {}
        self._shape: tuple[int, int, shapely.Polygon] | None = None

    @property
    def name(self) -> str:
        return self.cfg.name

    def shape(self, width: int, height: int) -> shapely.Polygon:
        """The polygon in pixels of a ``width`` x ``height`` frame (cached: frame sizes rarely change)."""
        if self._shape is None or self._shape[:2] != (width, height):
            self._shape = (width, height, polygon(self.cfg.points_px(width, height)))
        return self._shape[2]

    def observe(self, frame: FrameTracks) -> BoolArray:
        """Which rows of the frame are inside by the zone's anchor rule and pass its filters, vectorised."""
        shape = self.shape(*frame.size)
        if self.cfg.anchor == "overlap":
            inside = overlap_ratios(shape, frame.xyxy) >= self.cfg.min_overlap
        else:
            inside = contains(shape, anchors(frame.xyxy, self.cfg.anchor))
        return inside & frame.passes(self.cfg, self.cfg.units)

    def update(self, keys: Sequence[int], inside: BoolArray, now_mono: float) -> list[ZoneChange]:
        """Feed one observation per object; returns the changes that passed the debounce."""
        changes = []
        for key, obs in zip(keys, inside.tolist(), strict=True):
            m = self._members.get(key)
            if m is None:
                if not obs:
                    continue
                m = self._members[key] = Membership()
            if obs == m.inside:
                m.pending_since_mono, m.pending_frames = None, 0
            else:
                if m.pending_since_mono is None:
                    m.pending_since_mono = now_mono
                m.pending_frames += 1
                began = m.pending_since_mono
                if m.pending_frames >= self.cfg.min_frames and now_mono - began >= self.cfg.min_s:
                    changes.append(ZoneChange(key, obs, 0.0 if obs else began - m.since_mono))
                    m.inside, m.since_mono = obs, began
                    m.pending_since_mono, m.pending_frames = None, 0
            if not m.inside and m.pending_since_mono is None:
                del self._members[key]
        return changes

    def __len__(self) -> int:
        """Objects with state here (inside, or a change pending)."""
        return len(self._members)

    def inside(self) -> list[tuple[int, Membership]]:
        """Objects whose committed state is inside, with their membership."""
        return [(key, m) for key, m in self._members.items() if m.inside]

    def forget(self, key: int) -> Membership | None:
        """Drop an object's state (it is gone); returns it so the caller can close an open stay."""
        return self._members.pop(key, None)

    def adopt(self, old: Zone) -> None:
        """Take over the memberships of the zone this one replaces (same name, edited at runtime)."""
        self._members = old._members
