"""Zone rules: config validation and files, debounced enter/exit, filters, occupancy, stationary objects,
id switches and runtime edits, all with synthetic tracks and frame timestamps."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamsrv.config.loader import parse_config
from streamsrv.config.rules import RulesConfig, load_rules, parse_rules, resolve_rules, save_rules
from streamsrv.errors import ConfigError
from streamsrv.events.model import Event
from streamsrv.rules.engine import RuleEngine
from streamsrv.types import Clock, FrameRef, FrameResult
from tests.support.builders import Track, frame_result, track, tracks

REPO = Path(__file__).resolve().parents[1]
LABELS = {0: "person", 1: "car"}
CLASS = {name: cid for cid, name in LABELS.items()}
SQUARE = [[100, 100], [300, 100], [300, 300], [100, 300]]


def obj(
    tid: int, x: float, y: float, label: str = "person", conf: float = 0.9, confirmed: bool = True, size: float = 40
) -> Track:
    """A track whose bottom-centre anchor is at (x, y); boxes are size wide and 2*size tall."""
    box = (x - size / 2, y - 2 * size, x + size / 2, y)
    return track(tid, box, class_id=CLASS[label], confidence=conf, confirmed=confirmed)


def frame(t: float, *objs: Track, w: int = 1280, h: int = 720) -> FrameResult:
    return frame_result("cam", tracks(*objs), ts=t, size=(w, h), labels=LABELS)


def engine(**zone: object) -> RuleEngine:
    cfg = {"name": "z", "polygon": SQUARE, "min_frames": 2, **zone}
    return RuleEngine("cam", RulesConfig.model_validate({"zones": [cfg]}))


def run(eng: RuleEngine, frames: list[FrameResult]) -> list[Event]:
    return [e for f in frames for e in eng.process(f).events]


def types(events: list[Event]) -> list[str]:
    return [e.type for e in events]


# --- config ---------------------------------------------------------------------------------------------


def test_polygon_needs_three_points() -> None:
    with pytest.raises(ConfigError, match=r"zones\[0\]\.polygon.*at least 3"):
        parse_rules("zones:\n  - name: z\n    polygon: [[0, 0], [1, 1]]\n")


def test_self_intersecting_polygon_is_an_error_naming_the_zone_and_its_line() -> None:
    text = (
        "zones:\n"
        "  - name: ok\n    polygon: [[0,0],[10,0],[10,10]]\n"
        "  - name: bowtie\n    polygon: [[0,0],[10,10],[10,0],[0,10]]\n"
    )
    with pytest.raises(ConfigError) as info:
        parse_rules(text, "zones/cam.yaml")
    assert "zones/cam.yaml:4: zones[1]" in str(info.value)
    assert "zone 'bowtie'" in str(info.value) and "Self-intersection" in str(info.value)


def test_norm_units_must_be_within_the_frame_and_names_unique() -> None:
    with pytest.raises(ConfigError, match=r"within 0\.\.1"):
        parse_rules("zones:\n  - {name: z, units: norm, polygon: [[0,0],[1.5,0],[1,1]]}\n")
    with pytest.raises(ConfigError, match="duplicate zone name"):
        parse_rules("zones:\n" + "  - {name: z, polygon: [[0,0],[9,0],[9,9]]}\n" * 2)
    with pytest.raises(ConfigError, match=r"colour.*unknown field"):
        parse_rules("zones:\n  - {name: z, colour: red, polygon: [[0,0],[9,0],[9,9]]}\n")
    with pytest.raises(ConfigError, match=r"relink_s \(5\.0\) cannot exceed grace_s \(3\.0\)"):
        parse_rules("relink_s: 5\n")


def test_tripwire_needs_two_distinct_points_and_two_direction_names() -> None:
    with pytest.raises(ConfigError, match="at least 2"):
        parse_rules("lines:\n  - {name: l, points: [[0,0]]}\n")
    with pytest.raises(ConfigError, match="consecutive points are equal"):
        parse_rules("lines:\n  - {name: l, points: [[0,0],[0,0],[5,5]]}\n")
    with pytest.raises(ConfigError, match="different names"):
        parse_rules("lines:\n  - {name: l, points: [[0,0],[5,5]], left_to_right: in, right_to_left: in}\n")
    with pytest.raises(ConfigError, match="crosses itself"):
        parse_rules("lines:\n  - {name: l, points: [[0,0],[10,10],[10,0],[0,10]]}\n")


def test_example_zones_file_loads() -> None:
    rules = load_rules(REPO / "zones" / "example.yaml")
    assert rules.zones and rules.lines
    for zone in rules.zones:
        pts = zone.points_px(1280, 720)
        assert (pts >= 0).all() and (pts[:, 0] <= 1280).all() and (pts[:, 1] <= 720).all()


def test_saved_rules_load_back_equal_and_keep_only_what_differs_from_defaults(tmp_path: Path) -> None:
    rules = load_rules(REPO / "zones" / "example.yaml")
    edited = rules.model_copy(update={"zones": rules.zones[:1]})
    save_rules(edited, tmp_path / "cam.yaml")
    assert load_rules(tmp_path / "cam.yaml") == edited
    text = (tmp_path / "cam.yaml").read_text()
    assert "grace_s" not in text and "counter" in text and "parking" not in text
    assert [p.name for p in tmp_path.iterdir()] == ["cam.yaml"]


def test_camera_rules_inline_or_a_file_relative_to_the_config(tmp_path: Path) -> None:
    (tmp_path / "zones").mkdir()
    (tmp_path / "zones" / "door.yaml").write_text("zones:\n  - {name: door, polygon: [[0,0],[9,0],[9,9]]}\n")
    cfg = parse_config(
        "cameras:\n"
        "  - {id: a, url: a.mp4, rules: zones/door.yaml}\n"
        "  - {id: b, url: b.mp4, rules: {lines: [{name: gate, points: [[0,0],[5,5]]}]}}\n"
        "  - {id: c, url: c.mp4}\n",
        base_dir=tmp_path,
    )
    a, b, c = (resolve_rules(cam.rules, cfg.base_dir, cam.id) for cam in cfg.cameras)
    assert [z.name for z in a.zones] == ["door"]
    assert [ln.name for ln in b.lines] == ["gate"]
    assert c == RulesConfig()
    with pytest.raises(ConfigError, match=r"camera 'x'.*missing\.yaml: cannot read"):
        resolve_rules("missing.yaml", tmp_path, "x")
    with pytest.raises(ConfigError, match=r"cameras\[0\]\.rules = 'zones\.txt'"):
        parse_config("cameras:\n  - {id: a, url: a.mp4, rules: zones.txt}\n")
    with pytest.raises(ConfigError, match=r"^<config>:4: cameras\[0\]\.rules\.zones\[0\]\.polygon"):
        parse_config("cameras:\n  - id: a\n    url: a.mp4\n    rules: {zones: [{name: z, polygon: [[0, 0]]}]}\n")


# --- enter / exit ----------------------------------------------------------------------------------------


def test_enter_and_exit_with_dwell_from_frame_timestamps() -> None:
    eng = engine()
    events = run(eng, [frame(0.0, obj(1, 50, 200)), frame(0.2, obj(1, 150, 200)), frame(0.4, obj(1, 160, 200))])
    assert types(events) == ["zone.enter"]
    assert events[0].zone == "z" and events[0].track_id == 1 and events[0].label == "person"
    assert eng.output().occupancy == {"z": {"person": 1}}
    events = run(eng, [frame(10.0, obj(1, 400, 200)), frame(10.2, obj(1, 450, 200))])
    assert types(events) == ["zone.exit"]
    # Inside from t=0.2 (first inside frame) to t=10.0 (first outside frame): the debounce delay is not dwell.
    assert events[0].dwell_s == pytest.approx(9.8)
    assert eng.output().occupancy == {"z": {}}


def test_jitter_on_the_boundary_does_not_flap() -> None:
    eng = engine(min_frames=3)
    xs = [95, 105, 95, 105, 105, 95, 105, 95, 95, 105]  # the anchor hops over the x=100 edge
    events = run(eng, [frame(i * 0.1, obj(1, x, 200)) for i, x in enumerate(xs)])
    assert events == []
    events = run(eng, [frame(1.0 + i * 0.1, obj(1, 150, 200)) for i in range(3)])
    assert types(events) == ["zone.enter"]


def test_min_s_holds_under_frame_rate_changes() -> None:
    def inside_after(times: list[float]) -> list[str]:
        eng = engine(min_frames=1, min_s=1.0)
        return [f"{t:g}:{e.type}" for t in times for e in eng.process(frame(t, obj(1, 150, 200))).events]

    assert inside_after([0.0, 0.5, 0.9, 1.0, 1.5]) == ["1:zone.enter"]  # 10 fps then 2 fps
    assert inside_after([0.0, 0.04, 0.08, 0.3, 1.2]) == ["1.2:zone.enter"]  # 25 fps then a skip


def test_filters_on_label_confidence_and_box_area() -> None:
    eng = engine(labels=["car"], min_confidence=0.5, min_box_area=5000)
    frames = [
        frame(
            t,
            obj(1, 150, 200, "person"),
            obj(2, 150, 250, "car", 0.3),
            obj(3, 200, 200, "car", size=20),
            obj(4, 250, 250, "car", size=60),
        )
        for t in (0.0, 0.2, 0.4)
    ]
    events = run(eng, frames)
    assert [(e.type, e.track_id) for e in events] == [("zone.enter", 4)]
    assert eng.output().occupancy == {"z": {"car": 1}}


def test_a_track_failing_a_filter_counts_as_outside() -> None:
    eng = engine(min_confidence=0.5)
    run(eng, [frame(0.0, obj(1, 150, 200)), frame(0.2, obj(1, 150, 200))])
    events = run(eng, [frame(0.4, obj(1, 150, 200, conf=0.2)), frame(0.6, obj(1, 150, 200, conf=0.2))])
    assert types(events) == ["zone.exit"]


def test_norm_and_overlap_anchor() -> None:
    eng = RuleEngine(
        "cam",
        RulesConfig.model_validate(
            {
                "zones": [
                    {
                        "name": "left",
                        "units": "norm",
                        "polygon": [[0, 0], [0.5, 0], [0.5, 1], [0, 1]],
                        "anchor": "overlap",
                        "min_overlap": 0.6,
                        "min_frames": 1,
                    },
                ]
            }
        ),
    )
    # At 1280 wide the zone ends at x=640: a 40 px box at 630 is 75% inside, one at 645 only 37.5%.
    assert types(eng.process(frame(0.0, obj(1, 630, 200), obj(2, 645, 200))).events) == ["zone.enter"]
    assert eng.output().occupancy == {"left": {"person": 1}}


def test_tentative_tracks_take_no_part() -> None:
    eng = engine()
    events = run(eng, [frame(t, obj(1, 150, 200, confirmed=False)) for t in (0.0, 0.2, 0.4)])
    assert events == [] and eng.output().occupancy == {"z": {}}
    assert types(run(eng, [frame(0.6, obj(1, 150, 200)), frame(0.8, obj(1, 150, 200))])) == ["zone.enter"]


def test_occupancy_per_label() -> None:
    eng = engine(min_frames=1)
    eng.process(frame(0.0, obj(1, 150, 200), obj(2, 200, 200), obj(3, 250, 250, "car"), obj(4, 500, 200)))
    assert eng.output().occupancy == {"z": {"person": 2, "car": 1}}


# --- clocks ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("clock", "enter_ts", "dwell_s"), [("live", 1.7e9 + 5 * 0.2, 10 * 0.6), ("video", 0.2, 0.6)])
def test_the_engine_runs_on_the_clock_it_is_given(clock: Clock, enter_ts: float, dwell_s: float) -> None:
    """Three clocks that disagree: live engines measure in mono_ts and date in wall_ts, video ones use video_ts.
    The enter commits on the second frame inside (t=0.2), the exit on the second outside (t=0.8)."""
    eng = RuleEngine("cam", RulesConfig.model_validate({"zones": [{"name": "z", "polygon": SQUARE}]}), clock=clock)
    events = []
    for i, x in enumerate([150, 150, 150, 900, 900]):
        t = i * 0.2
        tracks = frame(t, obj(1, x, 200)).tracks
        ref = FrameRef("cam", i + 1, i, 1280, 720, wall_ts=1.7e9 + 5 * t, mono_ts=100 + 10 * t, video_ts=t)
        events += eng.process(FrameResult(ref, tracks, LABELS)).events
    assert types(events) == ["zone.enter", "zone.exit"]
    assert events[0].ts == pytest.approx(enter_ts)
    assert events[1].dwell_s == pytest.approx(dwell_s)


# --- lost tracks, id switches, stationary objects ---------------------------------------------------------


def test_a_lost_track_exits_after_the_grace_time_dated_when_last_seen() -> None:
    eng = engine()
    run(eng, [frame(0.0, obj(1, 150, 200)), frame(0.2, obj(1, 150, 200))])
    assert run(eng, [frame(t / 10, obj(9, 900, 600)) for t in range(3, 30)]) == []  # 2.8 s < 3 s grace
    events = run(eng, [frame(3.4, obj(9, 900, 600))])
    assert types(events) == ["zone.exit"]
    assert events[0].ts == pytest.approx(1.7e9 + 0.2, abs=1e-6) and events[0].dwell_s == pytest.approx(0.2)
    assert eng.output().tracked_objects == 1


def test_an_id_switch_inside_the_zone_does_not_enter_again() -> None:
    eng = engine()
    events = run(eng, [frame(0.0, obj(1, 150, 200)), frame(0.2, obj(1, 152, 200)), frame(0.4, obj(1, 154, 200))])
    # The tracker loses id 1 and starts id 7 (tentative) on the same person.
    events += run(eng, [frame(0.6, obj(7, 158, 201, confirmed=False)), frame(0.8, obj(7, 160, 202))])
    events += run(eng, [frame(5.0 + t, obj(7, 160, 202)) for t in (0.0, 0.2)])
    assert types(events) == ["zone.enter"]
    assert eng.output().occupancy == {"z": {"person": 1}}
    exit_events = run(eng, [frame(6.0, obj(7, 500, 200)), frame(6.2, obj(7, 500, 200))])
    assert [(e.type, e.track_id) for e in exit_events] == [("zone.exit", 7)]
    assert exit_events[0].dwell_s == pytest.approx(6.0 - 0.0)


def test_a_new_id_far_away_or_of_another_label_is_a_new_object() -> None:
    eng = engine(min_frames=1)
    eng.process(frame(0.0, obj(1, 150, 200)))
    events = eng.process(frame(0.2, obj(2, 280, 280), obj(3, 152, 200, "car"))).events
    assert sorted(e.track_id or 0 for e in events if e.type == "zone.enter") == [2, 3]


def test_parked_car_goes_stationary_and_survives_detector_dropouts() -> None:
    eng = engine(labels=["car"], ignore_stationary=True, loiter_s=5.0)
    frames = [frame(t * 0.5, obj(1, 200, 200, "car", size=60)) for t in range(40)]  # 20 s parked
    events = run(eng, frames)
    # One enter, and loitering from 5 s, while it was not yet stationary (that takes 10 s); then silence.
    assert types(events) == ["zone.enter", "loiter.start"]
    assert eng.output().stationary_ids == {1}
    # The detector drops it for 20 s, then the tracker finds it again under a new id: no new events.
    events = run(eng, [frame(40.0 + t * 0.5, obj(2, 201, 201, "car", size=60)) for t in range(10)])
    assert events == []
    assert eng.output().occupancy == {"z": {"car": 1}}


def test_ignore_stationary_freezes_zone_state_and_loitering() -> None:
    eng = engine(ignore_stationary=True, loiter_s=20.0)
    frames = [frame(t * 0.5, obj(1, 200, 200)) for t in range(70)]  # stands still for 35 s
    assert types(run(eng, frames)) == ["zone.enter"]
    # It walks on inside the zone: no longer stationary, so loitering (dwell > 20 s) starts now.
    events = run(eng, [frame(35.0 + t * 0.5, obj(1, 200 + 10 * t, 200)) for t in range(3)])
    assert types(events) == ["loiter.start"]
    assert events[0].dwell_s is not None and events[0].dwell_s > 35


# --- runtime edits ----------------------------------------------------------------------------------------


def test_update_rules_keeps_state_of_zones_that_keep_their_name() -> None:
    eng = engine(min_frames=1)
    eng.process(frame(0.0, obj(1, 150, 200)))
    bigger = [[50, 50], [350, 50], [350, 350], [50, 350]]
    eng.update_rules(
        RulesConfig.model_validate(
            {
                "zones": [
                    {"name": "z", "polygon": bigger, "min_frames": 1},
                    {"name": "new", "polygon": SQUARE, "min_frames": 1},
                ]
            }
        )
    )
    events = eng.process(frame(0.2, obj(1, 150, 200))).events
    assert [(e.type, e.zone) for e in events] == [("zone.enter", "new")]
    eng.update_rules(RulesConfig())
    assert eng.process(frame(0.4, obj(1, 150, 200))).events == () and eng.output().occupancy == {}
