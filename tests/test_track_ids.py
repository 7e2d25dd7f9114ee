"""ByteTrack's wrapper on synthetic boxes: the ids users see, and the track-quality counters."""

from __future__ import annotations

import numpy as np

from streamsrv.config.models import TrackerConfig
from streamsrv.track.bytetrack import ByteTracker
from streamsrv.types import Detections, Tracks

FPS = 5.0


def boxes(*rows: tuple[float, float, float]) -> Detections:
    """Detections from (x, y, confidence): 40x80 boxes with their top-left corner at x, y."""
    xyxy = np.array([[x, y, x + 40, y + 80] for x, y, _ in rows], np.float32).reshape(-1, 4)
    conf = np.array([c for _, _, c in rows], np.float32)
    return Detections(xyxy=xyxy, confidence=conf, class_id=np.zeros(len(rows), np.int32))


def run(tracker: ByteTracker, frames: list[Detections], start: int = 0) -> list[Tracks]:
    return [tracker.update(d, None, (start + i) / FPS) for i, d in enumerate(frames)]


def test_ids_are_given_on_confirmation_densely_and_tentative_tracks_are_negative() -> None:
    tracker = ByteTracker(TrackerConfig(), FPS)
    first = run(tracker, [boxes((10, 10, 0.9))])[0]
    assert first.track_id.tolist() == [1] and first.confirmed.all()  # the first frame confirms at once
    # Flickers: a box seen once, in a frame of its own, never confirms and never takes an id.
    out = run(tracker, [boxes((10, 10, 0.9), (300, 10, 0.9)), boxes((10, 10, 0.9))], start=1)
    assert out[0].track_id.tolist()[0] == 1 and out[0].track_id[1] < 0 and not out[0].confirmed[1]
    # A newcomer seen twice is the second person: id 2, whatever ids the tracker used up meanwhile.
    out = run(tracker, [boxes((10, 10, 0.9), (500, 10, 0.9)), boxes((10, 10, 0.9), (500, 10, 0.9))], start=3)
    assert out[0].track_id[1] < 0
    assert out[1].track_id.tolist() == [1, 2] and out[1].confirmed.all()


def test_a_track_lost_for_good_comes_back_tentative_and_then_as_the_next_person() -> None:
    tracker = ByteTracker(TrackerConfig(lost_track_s=0.5), FPS)
    run(tracker, [boxes((10 + 4 * i, 10, 0.9)) for i in range(3)])
    out = run(tracker, [boxes(), boxes(), boxes(), boxes(), boxes((34, 10, 0.9)), boxes((38, 10, 0.9))], start=3)
    assert out[4].track_id[0] < 0 and out[5].track_id.tolist() == [2]


def test_quality_counts_how_tracks_start_and_end() -> None:
    tracker = ByteTracker(TrackerConfig(lost_track_s=0.4), FPS)
    person = [boxes((10 + 4 * i, 10, 0.9)) for i in range(6)]
    flicker = [boxes((10 + 4 * i, 10, 0.9), (300, 200, 0.9)) if i == 2 else person[i] for i in range(6)]
    run(tracker, [*flicker, *[boxes()] * 5])
    q = tracker.quality
    assert (q.tentative_started, q.confirmed_started, q.never_confirmed, q.confirmed_ended) == (2, 1, 1, 1)
    assert q.confirmed_seconds == 1.0  # shown from 0.0 s to 1.0 s
