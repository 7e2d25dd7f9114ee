"""Rules on real detections: the whole 720p concourse clip through the real person model, the tracker and a
tripwire across the middle of the frame (people walk up and down the image, so they cross it both ways)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from streamsrv.analyze import Analyzer
from streamsrv.config.models import AppConfig, CameraConfig

pytestmark = pytest.mark.slow

LINE_Y = 400


@pytest.fixture(scope="module")
def records(clip_720p: Path, person_model: Path) -> list[dict[str, Any]]:
    cfg = AppConfig.model_validate(
        {
            "model": {"path": str(person_model), "labels": {"Normal": "person", "Fall": "person"}},
            "inference": {"threads": 1, "device": "cpu"},
        }
    )
    camera = CameraConfig.model_validate(
        {
            "id": "concourse",
            "url": str(clip_720p),
            # Drawn left to right, so "in" (left_to_right) is walking down the image and "out" walking up.
            "rules": {"lines": [{"name": "mid", "points": [[0, LINE_Y], [1280, LINE_Y]]}]},
        }
    )
    return list(Analyzer(cfg).records(str(clip_720p), camera=camera, detect_fps=10))


def crossings(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r["event"] for r in records if r["type"] == "event" and r["event"]["type"] == "line.cross"]


def test_the_whole_clip_is_processed_at_the_requested_rate(records: list[dict[str, Any]]) -> None:
    summary = records[-1]
    assert summary["type"] == "summary"
    # 13.6 s at 10 of the clip's 25 fps.
    assert 130 <= summary["frames"] <= 140
    assert all(r["width"] == 1280 and r["height"] == 720 for r in records if r["type"] == "frame")


def test_the_tripwire_counts_crossings_in_both_directions(records: list[dict[str, Any]]) -> None:
    by_direction = Counter(e["direction"] for e in crossings(records))
    assert by_direction["in"] >= 2 and by_direction["out"] >= 2, by_direction
    assert set(by_direction) == {"in", "out"}


def test_no_track_is_counted_twice_in_one_direction(records: list[dict[str, Any]]) -> None:
    per_track = Counter((e["track_id"], e["direction"]) for e in crossings(records))
    assert per_track and max(per_track.values()) == 1, per_track.most_common(3)


def test_crossings_happen_where_the_line_is(records: list[dict[str, Any]]) -> None:
    for e in crossings(records):
        _, y1, _, y2 = e["bbox"]
        # The feet (bottom centre) stand just past the line when the crossing is counted.
        assert abs(y2 - LINE_Y) < (y2 - y1), e
        assert e["label"] == "person" and e["line"] == "mid"


def test_counters_equal_the_line_cross_events(records: list[dict[str, Any]]) -> None:
    summary = records[-1]
    by_direction = Counter(e["direction"] for e in crossings(records))
    counts = summary["line_counts"]["mid"]
    assert {d: sum(by_label.values()) for d, by_label in counts.items()} == {
        "in": by_direction["in"],
        "out": by_direction["out"],
    }
    assert summary["events"]["line.cross"] == len(crossings(records))


def test_event_sequence_numbers_have_no_gaps(records: list[dict[str, Any]]) -> None:
    events = [r["event"] for r in records if r["type"] == "event"]
    assert len({e["run_id"] for e in events}) == 1
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
