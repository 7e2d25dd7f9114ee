"""Tripwires: count objects crossing a line or polyline, per direction and label.

A crossing is the segment between an object's consecutive anchor positions meeting the line, so a jump over
the line between two processed frames (frame skipping, an occlusion gap, an id switch re-linked by the
registry) is still found. Crossings accumulate into a per-object balance (+1 left to right, -1 back) that is
committed only once the anchor stands ``hysteresis`` box diagonals past the line: an object that stops on the
line, or jitters across it, crosses and uncrosses within that band and never counts. A committed direction
does not count again for the same object within ``cooldown_s``. An object pruned while its balance is
open (it crossed and vanished near the line) is committed then.

Example:
    >>> from streamsrv.config.rules import LineConfig
    >>> wire = Tripwire(LineConfig(name="gate", points=[(0, 100), (200, 100)]))
    >>> wire.counts_by_direction()
    {'in': {}, 'out': {}}
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import shapely

from streamsrv.config.rules import LineConfig
from streamsrv.rules.geometry import F64, box_diagonals, crossings, distances
from streamsrv.rules.tracks import FrameTracks


@dataclass(slots=True)
class _Wire:
    """One object's crossing state on one line."""

    balance: int = 0
    counted_mono: dict[int, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Crossing:
    """A counted crossing: ``sign`` +1 is left to right, -1 right to left; ``direction`` its configured name."""

    key: int
    sign: int
    direction: str
    label: str


class Tripwire:
    """A line with its filters, per-object crossing state and counters (kept across rule edits)."""

    def __init__(self, cfg: LineConfig) -> None:
        self.cfg = cfg
        self._wires: dict[int, _Wire] = {}
        self._counts: dict[int, Counter[str]] = {1: Counter(), -1: Counter()}
        self._geom: tuple[int, int, F64, shapely.LineString] | None = None

    @property
    def name(self) -> str:
        return self.cfg.name

    def geometry(self, width: int, height: int) -> tuple[F64, shapely.LineString]:
        """The polyline in pixels of a ``width`` x ``height`` frame, as points and as a prepared LineString."""
        if self._geom is None or self._geom[:2] != (width, height):
            pts = self.cfg.points_px(width, height)
            line = shapely.LineString(pts)
            shapely.prepare(line)
            self._geom = (width, height, pts, line)
        return self._geom[2], self._geom[3]

    def update(self, frame: FrameTracks, now_mono: float) -> list[Crossing]:
        """Advance every object that moved since its last observation; returns the crossings counted now."""
        if len(frame) == 0:
            return []
        pts, line = self.geometry(*frame.size)
        rows = np.flatnonzero(frame.has_prev)
        cur = frame.anchors(self.cfg.anchor)
        net = crossings(frame.anchors(self.cfg.anchor, prev=True)[rows], cur[rows], pts)
        hit = net != 0
        for r, n in zip(rows[hit].tolist(), net[hit].tolist(), strict=True):
            w = self._wires.setdefault(int(frame.keys[r]), _Wire())
            # Clamped: a second crossing the same way (round the end of a polyline) is still one side change.
            w.balance = max(-1, min(1, w.balance + n))
        open_rows = [frame.row_of[k] for k, w in self._wires.items() if w.balance and k in frame.row_of]
        if not open_rows:
            return []
        eligible = frame.confirmed & frame.passes(self.cfg, self.cfg.units)
        clear = distances(line, cur[open_rows]) >= self.cfg.hysteresis * box_diagonals(frame.xyxy[open_rows])
        out = []
        for r, far in zip(open_rows, clear.tolist(), strict=True):
            if far and eligible[r]:
                crossing = self._commit(int(frame.keys[r]), frame.labels[r], now_mono)
                if crossing is not None:
                    out.append(crossing)
        return out

    def forget(self, key: int, label: str, eligible: bool, now_mono: float) -> Crossing | None:
        """Drop a gone object's state, counting a crossing it made but had not yet cleared the band of."""
        crossing = self._commit(key, label, now_mono) if eligible and self._balance(key) else None
        self._wires.pop(key, None)
        return crossing

    def counts_by_direction(self) -> dict[str, dict[str, int]]:
        """Crossings so far: direction name -> label -> count."""
        return {self.cfg.direction_name(sign): dict(self._counts[sign]) for sign in (1, -1)}

    def __len__(self) -> int:
        """Objects with crossing state (an open balance or a cooldown)."""
        return len(self._wires)

    def adopt(self, old: Tripwire) -> None:
        """Take over counters and per-object state of the line this one replaces (same name)."""
        self._wires, self._counts = old._wires, old._counts

    def _balance(self, key: int) -> int:
        w = self._wires.get(key)
        return 0 if w is None else w.balance

    def _commit(self, key: int, label: str, now_mono: float) -> Crossing | None:
        w = self._wires[key]
        sign, w.balance = w.balance, 0
        last = w.counted_mono.get(sign)
        if last is not None and now_mono - last < self.cfg.cooldown_s:
            return None
        w.counted_mono[sign] = now_mono
        self._counts[sign][label] += 1
        return Crossing(key, sign, self.cfg.direction_name(sign), label)
