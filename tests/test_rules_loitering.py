"""Loitering measured on frame timestamps: fps changes, frame skipping, short losses, id switches, exits."""

from __future__ import annotations

import numpy as np
import pytest

from streamsrv.config.rules import RulesConfig
from streamsrv.events.model import Event
from streamsrv.rules.engine import RuleEngine
from streamsrv.types import FrameResult
from tests.support.builders import frame_result, track, tracks

ZONE = {"name": "lobby", "polygon": [[100, 100], [600, 100], [600, 600], [100, 600]], "loiter_s": 10.0}


def frame(t: float, *people: tuple[int, float]) -> FrameResult:
    """People given as (track id, x) of a 40x100 box standing at y=400."""
    return frame_result("cam", tracks(*(track(tid, (x - 20, 300, x + 20, 400)) for tid, x in people)), ts=t)


def engine(**zone: object) -> RuleEngine:
    return RuleEngine("cam", RulesConfig.model_validate({"zones": [{**ZONE, **zone}]}))


def run(eng: RuleEngine, times: list[float], tid: int = 1, x: float = 300) -> list[Event]:
    """One person pacing about x (so never stationary) at the given frame times."""
    return [e for t in times for e in eng.process(frame(t, (tid, x + 50 * np.sin(t)))).events]


def kinds(events: list[Event]) -> list[tuple[str, float]]:
    return [(e.type, round(e.ts - 1.7e9, 3)) for e in events]


def test_loiter_starts_after_loiter_s_of_frame_time_then_ends_on_exit() -> None:
    eng = engine()
    events = run(eng, [i * 0.2 for i in range(60)])  # 5 fps for 12 s
    assert kinds(events) == [("zone.enter", 0.2), ("loiter.start", 10.0)]
    assert events[1].dwell_s == pytest.approx(10.0)
    events = run(eng, [12.0, 12.2], x=900)
    assert [(e.type, e.dwell_s) for e in events] == [("zone.exit", pytest.approx(12.0)), ("loiter.end", 12.0)]


@pytest.mark.parametrize(
    "times",
    [
        [i * 0.04 for i in range(300)],  # 25 fps
        [i * 1.0 for i in range(13)],  # 1 fps
        [0.0, 0.1, 0.2, 3.0, 3.1, 8.0, 9.99, 10.0, 10.5, 12.0],  # variable fps with skips
    ],
    ids=["25fps", "1fps", "variable"],
)
def test_loiter_threshold_is_the_same_at_any_frame_rate(times: list[float]) -> None:
    eng = engine(min_frames=1)
    events = run(eng, times)
    starts = [e for e in events if e.type == "loiter.start"]
    assert len(starts) == 1
    # The first frame at or after 10 s of dwell raises it, whatever the rate.
    assert starts[0].ts - 1.7e9 == pytest.approx(min(t for t in times if t >= 10.0))


def test_a_short_track_loss_does_not_reset_dwell() -> None:
    eng = engine()
    events = run(eng, [i * 0.5 for i in range(13)])  # 0..6 s
    events += run(eng, [8.5, 9.0, 9.5, 10.0, 10.5])  # lost for 2.5 s (< 3 s grace), same id
    assert kinds(events) == [("zone.enter", 0.5), ("loiter.start", 10.0)]


def test_an_id_switch_keeps_dwell() -> None:
    eng = engine()
    events = run(eng, [i * 0.5 for i in range(13)])  # id 1 until 6 s
    events += run(eng, [6.5 + i * 0.5 for i in range(9)], tid=5)  # id 5 from 6.5 s on the same person
    assert kinds(events) == [("zone.enter", 0.5), ("loiter.start", 10.0)]
    assert events[-1].track_id == 5


def test_a_long_loss_ends_the_stay_at_the_last_sighting() -> None:
    eng = engine()
    events = run(eng, [i * 0.5 for i in range(25)])  # to 12 s: loitering
    events += [e for t in (13.0, 14.0, 15.0, 15.5) for e in eng.process(frame(t)).events]  # gone > 3 s
    assert kinds(events) == [("zone.enter", 0.5), ("loiter.start", 10.0), ("zone.exit", 12.0), ("loiter.end", 12.0)]
    assert events[-1].dwell_s == pytest.approx(12.0)
    events = run(eng, [20.0 + i * 0.5 for i in range(4)])  # back after 8 s: a new stay
    assert kinds(events) == [("zone.enter", 20.5)]


def test_boundary_jitter_does_not_restart_the_dwell() -> None:
    eng = engine(min_frames=3)
    xs = [580, 580, 580] + [610, 590, 610, 610, 590, 595] * 4  # hops over the x=600 edge, never 3 frames out
    events = [e for i, x in enumerate(xs) for e in eng.process(frame(i * 0.5, (1, x))).events]
    # Entered when the third inside frame confirmed it (1 s), dwell counted from the first (0 s).
    assert kinds(events) == [("zone.enter", 1.0), ("loiter.start", 10.0)]


def test_state_stays_flat_over_thousands_of_passers_by() -> None:
    eng = RuleEngine(
        "cam",
        RulesConfig.model_validate(
            {
                "zones": [{**ZONE, "loiter_s": 1.0}],
                "lines": [{"name": "gate", "points": [[350, 0], [350, 720]]}],
            }
        ),
    )
    sizes = []
    t = 0.0
    for wave in range(400):  # five at a time walk through the zone and over the line, then leave the frame
        ids = range(wave * 5 + 1, wave * 5 + 6)
        for x in (50, 200, 300, 400, 500, 700):
            eng.process(frame(t, *[(tid, x + 30 * (tid % 5)) for tid in ids]))
            t += 0.5
        eng.process(frame(t))
        t += 4.0  # gone for longer than the grace time
        sizes.append(eng.output().state_entries)
    # Drawn downwards, the line has the right of the image on its left: walking rightwards is right_to_left.
    assert eng.output().line_counts["gate"] == {"in": {}, "out": {"person": 2000}}
    assert max(sizes) == sizes[0] and sizes[-1] <= 5 * 4


def test_the_output_names_the_tracks_of_the_frame_that_loiter() -> None:
    eng = engine()
    outside = (2, 900.0)
    outs = [eng.process(frame(float(t), (1, 300 + 50 * np.sin(t)), outside)) for t in range(12)]
    assert outs[5].loitering_ids == frozenset()
    assert outs[-1].loitering_ids == {1}
    assert eng.process(frame(12.0, outside)).loitering_ids == frozenset()  # not in this frame (lost for now)
    assert eng.process(frame(12.5, (1, 300), outside)).loitering_ids == {1}  # back within the grace time
    outs = [eng.process(frame(13.0 + t, (1, 900))) for t in range(5)]  # it walks out
    assert "loiter.end" in [e.type for out in outs for e in out.events]
    assert outs[-1].loitering_ids == frozenset()
