"""Who is who across frames for the rules: one ``TrackState`` per object, kept through id switches and short losses.

Trackers lose objects behind occluders and sometimes give a reappearing object a new id. Rules must not
count such an object twice (a tripwire crossed again, a zone entered again, a dwell time restarted), so the
registry keys its state by object, not by tracker id: a new tracker id appearing within ``relink_radius``
box diagonals of where a track of the same label vanished less than ``relink_s`` ago takes over that
object. A stationary object is remembered longer (``stationary_grace_s``) because detectors drop and
re-find parked cars all the time. A tentative track shows a negative id that changes when it is confirmed
(trackers give ids on confirmation), so a track confirmed now takes over, the same way, a tentative one seen
in the previous frame: what it did while tentative (half a crossing) still counts. State of objects gone for
longer is pruned, so memory stays flat.

Example:
    >>> reg = TrackRegistry(RulesConfig())
    >>> len(reg)
    0
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from streamsrv.config.rules import ObjectFilter, RulesConfig
from streamsrv.rules.geometry import AnchorPoint, anchors, box_areas, box_diagonals
from streamsrv.types import FrameRef, FrameResult

F64 = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

# A track that reappears with a box this many times larger or smaller is not the one that vanished.
_MAX_SIZE_RATIO = 2.0


@dataclass(slots=True)
class TrackState:
    """What the rules remember about one object; ``key`` stays the same across tracker id switches.

    ``track_id`` is the object's tracker id in its latest frame (negative while that track is tentative),
    ``confirmed_id`` the latest id it was seen with confirmed: what its events name it by.
    """

    key: int
    track_id: int
    label: str
    confidence: float
    xyxy: F64
    last_seen_mono: float
    last_seen_ts: float
    confirmed: bool
    rest_xy: F64
    rest_since_mono: float
    stationary: bool = False
    confirmed_id: int = 0


@dataclass(frozen=True, slots=True)
class FrameTracks:
    """The tracks of one frame, aligned row by row with their object state."""

    keys: npt.NDArray[np.int64]
    states: list[TrackState]
    xyxy: F64
    prev_xyxy: F64
    has_prev: BoolArray
    confidence: F64
    labels: list[str]
    confirmed: BoolArray
    stationary: BoolArray
    ref: FrameRef
    row_of: dict[int, int]
    _anchors: dict[tuple[AnchorPoint, bool], F64] = field(default_factory=dict, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.states)

    @property
    def size(self) -> tuple[int, int]:
        """The frame's width and height: what rules given in normalised units scale by."""
        return self.ref.width, self.ref.height

    def anchors(self, kind: AnchorPoint, prev: bool = False) -> F64:
        """Anchor points ``(n, 2)`` of this frame's boxes (or of each object's previous box), computed once."""
        if (kind, prev) not in self._anchors:
            self._anchors[kind, prev] = anchors(self.prev_xyxy if prev else self.xyxy, kind)
        return self._anchors[kind, prev]

    def passes(self, flt: ObjectFilter, units: str) -> BoolArray:
        """Which rows pass a rule's label, confidence and box-area filter."""
        return filter_mask(flt, units, self.labels, self.confidence, self.xyxy, *self.size)


def filter_mask(
    flt: ObjectFilter, units: str, labels: list[str], confidence: F64, xyxy: F64, width: int, height: int
) -> BoolArray:
    """Rows passing ``flt``; ``min_box_area`` is px² with units px and a fraction of the frame with units norm."""
    ok = confidence >= flt.min_confidence
    if flt.labels is not None:
        wanted = set(flt.labels)
        ok &= np.array([label in wanted for label in labels], np.bool_)
    if flt.min_box_area > 0:
        area = box_areas(xyxy)
        ok &= (area / (width * height) if units == "norm" else area) >= flt.min_box_area
    return np.asarray(ok, np.bool_)


class TrackRegistry:
    """Maps tracker ids to objects, re-links id switches, marks stationary objects and prunes lost ones."""

    def __init__(self, rules: RulesConfig) -> None:
        self.rules = rules
        self._states: dict[int, TrackState] = {}
        self._key_of: dict[int, int] = {}
        self._next_key = 1
        self.relinks = 0  # id switches joined up: an object followed on, not counted twice
        self._last_mono = float("-inf")  # the previous frame's time

    def __len__(self) -> int:
        return len(self._states)

    def states(self) -> list[TrackState]:
        return list(self._states.values())

    def update(self, result: FrameResult, now_mono: float, ts: float) -> FrameTracks:
        """Attach this frame's tracks to objects (new, known, or re-linked) and update their state; ``now_mono``
        is the frame's time for durations, ``ts`` its time for events."""
        tracks = result.tracks
        ids = [int(t) for t in tracks.track_id]
        xyxy = tracks.xyxy.astype(np.float64)
        labels = [result.label_of(c) for c in tracks.class_id]
        keys = [self._key_of.get(tid, 0) for tid in ids]
        new_rows = [i for i, k in enumerate(keys) if k == 0]
        confirmed = tracks.confirmed.tolist()
        linked = self._link(new_rows, keys, ids, xyxy, labels, confirmed, now_mono) if new_rows else set()
        self._last_mono = now_mono
        fresh = [i for i in new_rows if i not in linked]
        for i in fresh:
            keys[i] = self._new(ids[i], now_mono)
        states = [self._states[k] for k in keys]
        has_prev = np.ones(len(keys), np.bool_)
        has_prev[fresh] = False
        prev = np.array([s.xyxy for s in states], np.float64).reshape(-1, 4)
        centers = anchors(xyxy, "center")
        rest = np.array([s.rest_xy for s in states], np.float64).reshape(-1, 2)
        moved = np.linalg.norm(centers - rest, axis=1) > self.rules.stationary_radius * box_diagonals(xyxy)
        moved |= ~has_prev
        confidence = tracks.confidence.tolist()
        for i, s in enumerate(states):
            s.xyxy, s.label, s.confidence = xyxy[i], labels[i], confidence[i]
            s.last_seen_mono, s.last_seen_ts = now_mono, ts
            s.confirmed = s.confirmed or confirmed[i]
            if confirmed[i]:
                s.confirmed_id = ids[i]
            if moved[i]:
                s.rest_xy, s.rest_since_mono = centers[i], now_mono
            s.stationary = now_mono - s.rest_since_mono >= self.rules.stationary_s
        return FrameTracks(
            keys=np.array(keys, np.int64),
            states=states,
            xyxy=xyxy,
            prev_xyxy=prev,
            has_prev=has_prev,
            confidence=tracks.confidence.astype(np.float64),
            labels=labels,
            confirmed=np.array([s.confirmed for s in states], np.bool_),
            stationary=np.array([s.stationary for s in states], np.bool_),
            ref=result.frame,
            row_of={k: i for i, k in enumerate(keys)},
        )

    def expire(self, now_mono: float) -> list[TrackState]:
        """Remove and return objects unseen for longer than their grace time."""
        gone = [
            s
            for s in self._states.values()
            if now_mono - s.last_seen_mono > (self.rules.stationary_grace_s if s.stationary else self.rules.grace_s)
        ]
        for s in gone:
            del self._states[s.key]
            if self._key_of.get(s.track_id) == s.key:
                del self._key_of[s.track_id]
        return gone

    def _new(self, track_id: int, now_mono: float) -> int:
        """A fresh object; ``update`` fills in what this frame says about it."""
        key, self._next_key = self._next_key, self._next_key + 1
        self._states[key] = TrackState(
            key=key,
            track_id=track_id,
            label="",
            confidence=0.0,
            xyxy=np.zeros(4, np.float64),
            last_seen_mono=now_mono,
            last_seen_ts=0.0,
            confirmed=False,
            rest_xy=np.zeros(2, np.float64),
            rest_since_mono=now_mono,
        )
        self._key_of[track_id] = key
        return key

    def _link(
        self,
        rows: list[int],
        keys: list[int],
        ids: list[int],
        xyxy: F64,
        labels: list[str],
        confirmed: list[bool],
        now_mono: float,
    ) -> set[int]:
        """Give new tracker ids the objects of tracks that vanished nearby, closest pairs first; returns the rows
        that were linked. Confirmed objects wait for a new id for ``relink_s``; a tentative one only for the next
        frame, and only for a track confirmed in it."""
        present = set(keys)
        rules = self.rules
        lost = [
            s
            for s in self._states.values()
            if s.key not in present
            and (
                (
                    s.confirmed
                    and now_mono - s.last_seen_mono <= (rules.stationary_grace_s if s.stationary else rules.relink_s)
                )
                or (s.track_id < 0 and s.last_seen_mono == self._last_mono)
            )
        ]
        if not lost:
            return set()
        lost_xyxy = np.stack([s.xyxy for s in lost])
        lost_diag = box_diagonals(lost_xyxy)
        new_diag = box_diagonals(xyxy[rows])
        dist = np.linalg.norm(anchors(xyxy[rows], "center")[:, None] - anchors(lost_xyxy, "center")[None], axis=2)
        ratio = new_diag[:, None] / np.maximum(lost_diag[None, :], 1e-9)
        same_label = np.array([[labels[r] == s.label for s in lost] for r in rows], np.bool_)
        takes_over = np.array([[confirmed[r] or s.confirmed for s in lost] for r in rows], np.bool_)
        ok = (
            same_label
            & takes_over
            & (dist <= rules.relink_radius * lost_diag[None, :])
            & (ratio <= _MAX_SIZE_RATIO)
            & (ratio >= 1 / _MAX_SIZE_RATIO)
        )
        taken_rows: set[int] = set()
        taken_lost: set[int] = set()
        for flat in np.argsort(np.where(ok, dist, np.inf), axis=None):
            r, j = divmod(int(flat), len(lost))
            if not ok[r, j]:
                break
            if r in taken_rows or j in taken_lost:
                continue
            taken_rows.add(r)
            taken_lost.add(j)
            s = lost[j]
            # An id switch: a confirmed id given up for another. A tentative id confirming is none.
            self.relinks += s.confirmed and s.track_id > 0
            if self._key_of.get(s.track_id) == s.key:
                del self._key_of[s.track_id]
            s.track_id = ids[rows[r]]
            self._key_of[s.track_id] = s.key
            keys[rows[r]] = s.key
        return {rows[r] for r in taken_rows}
