"""Tripwire rules with synthetic tracks: directions, frame skips, stopping on the line, occlusion gaps,
id switches, cooldown, per-label counters, runtime edits and flat memory."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from streamsrv.config.rules import RulesConfig
from streamsrv.events.model import Event
from streamsrv.rules.engine import RuleEngine
from streamsrv.types import FrameResult
from tests.support.builders import Track, frame_result, track, tracks

LABELS = {0: "person", 1: "car"}
CLASS = {name: cid for cid, name in LABELS.items()}
# Horizontal at y=400 from x=200 to x=1000, drawn left to right: walking down the image is "in".
GATE = {"name": "gate", "points": [[200, 400], [1000, 400]], "left_to_right": "in", "right_to_left": "out"}


def obj(tid: int, x: float, y: float, label: str = "person", confirmed: bool = True) -> Track:
    """A 40x100 box with its bottom centre (the default anchor) at (x, y): its diagonal is about 108 px."""
    return track(tid, (x - 20, y - 100, x + 20, y), class_id=CLASS[label], confidence=0.8, confirmed=confirmed)


def frame(t: float, *objs: Track) -> FrameResult:
    return frame_result("cam", tracks(*objs), ts=t, labels=LABELS)


def engine(**line: object) -> RuleEngine:
    return RuleEngine("cam", RulesConfig.model_validate({"lines": [{**GATE, **line}]}))


def walk(
    eng: RuleEngine, tid: int, ys: Sequence[float], t0: float = 0.0, dt: float = 0.2, x: float = 600
) -> list[Event]:
    return [e for i, y in enumerate(ys) for e in eng.process(frame(t0 + i * dt, obj(tid, x, y))).events]


def crossed(events: list[Event]) -> list[tuple[int | None, str | None]]:
    return [(e.track_id, e.direction) for e in events if e.type == "line.cross"]


def test_counts_both_directions_with_names_and_labels() -> None:
    eng = engine()
    events = walk(eng, 1, [300, 350, 390, 420, 470])
    assert crossed(events) == [(1, "in")]
    assert events[0].line == "gate" and events[0].label == "person"
    assert crossed(walk(eng, 2, [500, 450, 410, 380, 330], t0=5)) == [(2, "out")]
    assert eng.output().line_counts == {"gate": {"in": {"person": 1}, "out": {"person": 1}}}


def test_a_frame_skip_that_jumps_over_the_line_counts() -> None:
    eng = engine()
    assert crossed(walk(eng, 1, [200, 650], dt=2.0)) == [(1, "in")]


def test_walking_around_the_end_of_the_line_does_not_count() -> None:
    eng = engine()
    assert crossed(walk(eng, 1, [300, 500], x=1100)) == []


def test_a_track_that_stops_on_the_line_and_jitters_counts_nothing_until_it_leaves() -> None:
    eng = engine()
    ys = [300, 360, 398, 400, 403, 399, 401, 404, 397, 402, 400, 405, 398]  # band is ~11 px
    assert crossed(walk(eng, 1, ys)) == []
    assert crossed(walk(eng, 1, [440, 480], t0=len(ys) * 0.2)) == [(1, "in")]


def test_stopping_on_the_line_and_turning_back_counts_nothing() -> None:
    eng = engine()
    assert crossed(walk(eng, 1, [300, 380, 400, 405, 402, 395, 350, 300])) == []


def test_an_occlusion_gap_across_the_line_counts_once() -> None:
    eng = engine()
    events = walk(eng, 1, [300, 340, 370])
    # Hidden for 1.5 s (< grace) while it crossed; the tracker keeps the id.
    events += walk(eng, 1, [460, 500], t0=2.0)
    assert crossed(events) == [(1, "in")]


def test_an_id_switch_right_after_the_crossing_does_not_count_again() -> None:
    eng = engine()
    events = walk(eng, 1, [340, 380, 420])
    # Id 1 vanishes just past the line; id 2 (tentative at first) appears where it was and walks on.
    events += [e for e in eng.process(frame(0.6, obj(2, 602, 426, confirmed=False))).events]
    events += walk(eng, 2, [440, 480, 520], t0=0.8, x=604)
    assert crossed(events) == [(1, "in")]
    assert eng.output().line_counts["gate"]["in"] == {"person": 1}


def test_an_id_switch_that_jumps_back_before_the_line_does_not_count_again() -> None:
    eng = engine()
    events = walk(eng, 1, [340, 380, 430])
    # The new id's first box lands slightly before the line (a detector wobble), then it walks on over it.
    events += walk(eng, 2, [395, 440, 500], t0=0.6)
    assert crossed(events) == [(1, "in")]


def test_an_id_switch_in_the_band_counts_once_when_the_new_id_clears_it() -> None:
    eng = engine()
    events = walk(eng, 1, [340, 380, 404])  # across, but inside the hysteresis band
    events += walk(eng, 2, [406, 450, 500], t0=0.6)
    assert crossed(events) == [(2, "in")]


def test_cooldown_stops_a_quick_back_and_forth_from_counting_the_same_direction_twice() -> None:
    eng = engine(cooldown_s=3.0)
    events = walk(eng, 1, [350, 450, 350, 450, 350])  # 0.2 s apart, well past the band each time
    assert crossed(events) == [(1, "in"), (1, "out")]
    events = walk(eng, 1, [450], t0=3.5)
    assert crossed(events) == [(1, "in")]


def test_tentative_tracks_and_filtered_labels_do_not_count() -> None:
    eng = engine(labels=["person"])
    events = [
        e
        for i, y in enumerate([350, 450, 500])
        for e in eng.process(frame(i * 0.2, obj(1, 300, y, confirmed=False), obj(2, 500, y, "car"))).events
    ]
    assert crossed(events) == []


def test_a_track_that_crossed_while_tentative_counts_once_confirmed() -> None:
    eng = engine()
    events = [
        e for i, y in enumerate([350, 450]) for e in eng.process(frame(i * 0.2, obj(1, 600, y, confirmed=False))).events
    ]
    events += walk(eng, 1, [480], t0=0.4)
    assert crossed(events) == [(1, "in")]


def test_a_track_lost_just_after_crossing_counts_when_pruned() -> None:
    eng = engine()
    events = walk(eng, 1, [360, 390, 405])  # leaves the frame right after the line
    events += [e for t in np.arange(0.6, 4.0, 0.2) for e in eng.process(frame(float(t))).events]
    assert crossed(events) == [(1, "in")]
    assert events[-1].ts == pytest.approx(1.7e9 + 0.4, abs=1e-6)  # dated when it was last seen


def test_polyline_counts_crossings_of_any_segment() -> None:
    eng = RuleEngine(
        "cam", RulesConfig.model_validate({"lines": [{"name": "bend", "points": [[0, 400], [600, 400], [600, 0]]}]})
    )
    events = walk(eng, 1, [300, 500], x=300)  # over the horizontal part
    # Over the vertical part, drawn upwards: its left is the left of the image.
    events += [e for i, x in enumerate([500, 700]) for e in eng.process(frame(1 + 0.2 * i, obj(2, x, 200))).events]
    assert crossed(events) == [(1, "in"), (2, "in")]


def test_update_rules_keeps_counters_of_lines_that_keep_their_name() -> None:
    eng = engine()
    walk(eng, 1, [300, 500])
    eng.update_rules(
        RulesConfig.model_validate({"lines": [{**GATE, "right_to_left": "leaving"}, {**GATE, "name": "b"}]})
    )
    assert eng.output().line_counts == {
        "gate": {"in": {"person": 1}, "leaving": {}},
        "b": {"in": {}, "out": {}},
    }


def test_state_of_lost_tracks_is_pruned_so_memory_stays_flat() -> None:
    eng = engine()
    t = 0.0
    for tid in range(1, 601):  # 600 people cross one after another, each its own track id
        for y in (300, 380, 420, 500):
            eng.process(frame(t, obj(tid, 600, y)))
            t += 0.2
        t += 1.0  # far apart in time: no re-linking
    assert eng.output().line_counts["gate"]["in"] == {"person": 600}
    assert eng.output().tracked_objects <= 3
    assert eng.output().state_entries <= 6


def test_a_track_confirmed_on_the_far_side_counts_the_crossing_it_began_tentative() -> None:
    # Trackers give ids on confirmation: tentative -7 in one frame is confirmed 1 in the next.
    eng = engine()
    events = [
        *eng.process(frame(0.0, obj(-7, 600, 380, confirmed=False))).events,
        *eng.process(frame(0.2, obj(1, 600, 430))).events,
        *eng.process(frame(0.4, obj(1, 600, 480))).events,
    ]
    assert crossed(events) == [(1, "in")]
    assert eng.output().relinks == 0, "a confirmation is not an id switch"


def test_a_tentative_track_is_not_taken_over_later_nor_by_another_tentative_one() -> None:
    eng = engine()
    eng.process(frame(0.0, obj(-7, 600, 380, confirmed=False)))
    eng.process(frame(0.2, obj(-8, 600, 430, confirmed=False)))  # another tentative track: not the same object
    eng.process(frame(0.4))
    events = [*eng.process(frame(0.6, obj(1, 600, 440))).events, *eng.process(frame(0.8, obj(1, 600, 490))).events]
    assert crossed(events) == [], "a track first seen past the line has crossed nothing"


def test_after_an_id_switch_events_name_the_object_by_its_confirmed_id_until_the_new_track_confirms() -> None:
    eng = engine()
    walk(eng, 3, [360, 390])
    # The tracker lost #3 and found it again as tentative -40, which crosses; it confirms as #4 a frame later.
    tentative = eng.process(frame(0.4, obj(-40, 600, 420, confirmed=False))).events
    events = [*tentative, *eng.process(frame(0.6, obj(4, 600, 470))).events]
    assert crossed(events) == [(3, "in")]
    assert eng.output().relinks == 1
    assert crossed(walk(eng, 4, [420, 380, 330], t0=3.0)) == [(4, "out")]
