"""The per-camera rule engine: tracks in, events out. Pure logic, no I/O, no clock but the frames'.

Only confirmed tracks take part (an object re-linked after an id switch stays confirmed while its new id is
tentative). The engine runs on one ``Clock``: durations come from the frames' ``FrameRef.time_s`` and event times
from ``FrameRef.event_ts`` (live cameras: monotonic and wall-clock time; analyze and jobs: video time for both).

Example:
    >>> from streamsrv.config.rules import RulesConfig
    >>> engine = RuleEngine("door", RulesConfig.model_validate(
    ...     {"lines": [{"name": "gate", "points": [[0, 100], [200, 100]]}]}))
    >>> engine.output().line_counts
    {'gate': {'in': {}, 'out': {}}}
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from streamsrv.config.rules import RulesConfig
from streamsrv.events.model import Event, EventSequencer, EventType
from streamsrv.rules.loitering import LoiterTimer
from streamsrv.rules.tracks import FrameTracks, TrackRegistry, TrackState, filter_mask
from streamsrv.rules.tripwires import Crossing, Tripwire
from streamsrv.rules.zones import Zone
from streamsrv.types import Clock, FrameResult


@dataclass(frozen=True, slots=True)
class RuleOutput:
    """What the rules made of one frame, and the state they are in after it; never changes once made.

    ``occupancy``: zone -> label -> confirmed objects inside in this frame (stationary ones included).
    ``line_counts``: line -> direction name -> label -> crossings since the line was created.
    ``stationary_ids`` and ``loitering_ids``: tracker ids of objects now marked stationary, and of objects in this
    frame that loiter in some zone. ``rules`` are the rules all of it was computed with.
    ``relinks``: new tracker ids taken for an object already followed (tracker id switches joined up), so far.
    ``tracked_objects``: objects followed (seen lately, or vanished within their grace time); ``state_entries``: the
    per-object state held across all rules. Both stay flat on a stream that runs for weeks.
    """

    rules: RulesConfig
    events: tuple[Event, ...] = ()
    occupancy: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    line_counts: Mapping[str, Mapping[str, Mapping[str, int]]] = field(default_factory=dict)
    stationary_ids: frozenset[int] = frozenset()
    loitering_ids: frozenset[int] = frozenset()
    relinks: int = 0
    tracked_objects: int = 0
    state_entries: int = 0


class RuleEngine:
    """Zones, tripwires and loitering for one camera; owns the camera's event sequence.

    Not thread-safe: call every method from the thread that calls ``process`` (the camera's inference loop).

    Args:
        camera_id: the camera the frames come from.
        rules: its rules (inline or loaded with ``resolve_rules``).
        run_id: names this engine's event sequence; random when unset.
        first_seq: its first sequence number (a cluster node continues the camera's sequence).
        clock: ``live`` for cameras, ``video`` for recorded files (see ``Clock``).
    """

    def __init__(
        self,
        camera_id: str,
        rules: RulesConfig,
        run_id: str | None = None,
        clock: Clock = "live",
        first_seq: int = 1,
    ) -> None:
        self.camera_id = camera_id
        self.clock: Clock = clock
        self.events = EventSequencer(camera_id, run_id, first_seq)
        self.rules = rules
        self._registry = TrackRegistry(rules)
        self._zones = [Zone(z) for z in rules.zones]
        self._loiter = {z.name: LoiterTimer(z.loiter_s) for z in rules.zones if z.loiter_s}
        self._lines = [Tripwire(ln) for ln in rules.lines]
        self._occupancy: dict[str, dict[str, int]] = {z.name: {} for z in rules.zones}
        self._now = float("-inf")
        self._size = (1, 1)

    def process(self, result: FrameResult) -> RuleOutput:
        """Apply every rule to one frame's tracks: the events it caused, in sequence order, and the state after it."""
        ref = result.frame
        ts = ref.event_ts(self.clock)
        # Frame time never runs backwards for durations, even if a source's clock does.
        now = self._now = max(self._now, ref.time_s(self.clock))
        self._size = (ref.width, ref.height)
        frame = self._registry.update(result, now, ts)
        events: list[Event] = []
        for zone in self._zones:
            self._zone_step(zone, frame, now, ts, events)
        for wire in self._lines:
            for c in wire.update(frame, now):
                events.append(self._cross(wire, c, frame.states[frame.row_of[c.key]], ts))
        for gone in self._registry.expire(now):
            self._close(gone, now, events)
        loitering = set().union(*self._loiter.values()) if self._loiter else set()
        loitering_ids = frozenset(frame.states[frame.row_of[k]].track_id for k in loitering if k in frame.row_of)
        return self.output(tuple(events), loitering_ids)

    def output(self, events: tuple[Event, ...] = (), loitering_ids: frozenset[int] = frozenset()) -> RuleOutput:
        """The rules' state now, with ``events`` and ``loitering_ids`` as given (``process`` knows them)."""
        return RuleOutput(
            rules=self.rules,
            events=events,
            occupancy={name: dict(counts) for name, counts in self._occupancy.items()},
            line_counts={wire.name: wire.counts_by_direction() for wire in self._lines},
            stationary_ids=frozenset(s.track_id for s in self._registry.states() if s.stationary),
            loitering_ids=loitering_ids,
            relinks=self._registry.relinks,
            tracked_objects=len(self._registry),
            state_entries=len(self._registry)
            + sum(len(z) for z in self._zones)
            + sum(len(t) for t in self._loiter.values())
            + sum(len(w) for w in self._lines),
        )

    def camera_status(self, online: bool, ts: float) -> Event:
        """A ``camera.online`` / ``camera.offline`` event numbered in this camera's sequence."""
        return self.events.make("camera.online" if online else "camera.offline", ts)

    def update_rules(self, rules: RulesConfig) -> None:
        """Replace the rules at runtime. Zones and lines that keep their name keep their state and counters;
        removed ones are dropped without events (there is nothing left to leave)."""
        zones = {z.name: z for z in self._zones}
        lines = {ln.name: ln for ln in self._lines}
        self._zones = [Zone(z) for z in rules.zones]
        loiter = {z.name: LoiterTimer(z.loiter_s) for z in rules.zones if z.loiter_s}
        for zone in self._zones:
            if zone.name in zones:
                zone.adopt(zones[zone.name])
                if zone.name in loiter and zone.name in self._loiter:
                    loiter[zone.name].adopt(self._loiter[zone.name])
        self._loiter = loiter
        self._lines = [Tripwire(ln) for ln in rules.lines]
        for wire in self._lines:
            if wire.name in lines:
                wire.adopt(lines[wire.name])
        self._occupancy = {z.name: self._occupancy.get(z.name, {}) for z in rules.zones}
        self.rules = self._registry.rules = rules

    def _zone_step(self, zone: Zone, frame: FrameTracks, now: float, ts: float, events: list[Event]) -> None:
        taking_part = frame.confirmed.copy()
        if zone.cfg.ignore_stationary:
            taking_part &= ~frame.stationary
        rows = np.flatnonzero(taking_part)
        inside = zone.observe(frame)
        timer = self._loiter.get(zone.name)
        for change in zone.update(frame.keys[rows].tolist(), inside[rows], now):
            s = frame.states[frame.row_of[change.key]]
            if change.entered:
                events.append(self._track_event("zone.enter", s, ts, zone=zone.name))
            else:
                events.append(self._track_event("zone.exit", s, ts, zone=zone.name, dwell_s=change.dwell_s))
                if timer is not None and timer.end(change.key):
                    events.append(self._track_event("loiter.end", s, ts, zone=zone.name, dwell_s=change.dwell_s))
        counts: Counter[str] = Counter()
        for key, m in zone.inside():
            r = frame.row_of.get(key)
            if r is None or not frame.confirmed[r]:
                continue  # not in this frame: occupancy is what is seen now
            counts[frame.labels[r]] += 1
            if timer is not None and taking_part[r] and timer.check(key, m.since_mono, now):
                s = frame.states[r]
                events.append(self._track_event("loiter.start", s, ts, zone=zone.name, dwell_s=now - m.since_mono))
        self._occupancy[zone.name] = dict(counts)

    def _close(self, gone: TrackState, now: float, events: list[Event]) -> None:
        """A pruned object: end its zone stays and count a crossing it left open, dated when it was last seen."""
        ts, last = gone.last_seen_ts, gone.last_seen_mono
        for zone in self._zones:
            m = zone.forget(gone.key)
            timer = self._loiter.get(zone.name)
            if m is None or not m.inside:
                continue
            dwell = last - m.since_mono
            events.append(self._track_event("zone.exit", gone, ts, zone=zone.name, dwell_s=dwell))
            if timer is not None and timer.end(gone.key):
                events.append(self._track_event("loiter.end", gone, ts, zone=zone.name, dwell_s=dwell))
        for wire in self._lines:
            eligible = gone.confirmed and bool(self._passes(wire, gone))
            c = wire.forget(gone.key, gone.label, eligible, now)
            if c is not None:
                events.append(self._cross(wire, c, gone, ts))

    def _passes(self, wire: Tripwire, s: TrackState) -> bool:
        mask = filter_mask(wire.cfg, wire.cfg.units, [s.label], np.array([s.confidence]), s.xyxy[None], *self._size)
        return bool(mask[0])

    def _cross(self, wire: Tripwire, c: Crossing, s: TrackState, ts: float) -> Event:
        return self._track_event("line.cross", s, ts, line=wire.name, direction=c.direction, label=c.label)

    def _track_event(self, type: EventType, s: TrackState, ts: float, **fields: Any) -> Event:
        fields.setdefault("label", s.label)
        bbox = tuple(float(v) for v in s.xyxy)
        # An object re-linked to a still tentative track keeps the id it was confirmed with until that one confirms.
        track_id = s.confirmed_id or s.track_id
        return self.events.make(type, ts, track_id=track_id, confidence=s.confidence, bbox=bbox, **fields)
