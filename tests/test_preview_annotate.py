"""The preview annotator on hand-built tracks: what is drawn where, at what size, and what state it keeps."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from streamsrv.config.rules import RulesConfig
from streamsrv.preview.annotate import Annotator, Overlay, Trails, placeholder, preview_size
from streamsrv.types import CameraState, FrameResult, Tracks
from tests.support.builders import frame_result, track, tracks

GREY = 128
W, H = 1280, 720
RULES = RulesConfig.model_validate(
    {
        "zones": [
            {"name": "empty", "polygon": [[100, 100], [300, 100], [300, 300], [100, 300]]},
            {"name": "busy", "polygon": [[0.5, 0.5], [0.7, 0.5], [0.7, 0.8], [0.5, 0.8]], "units": "norm"},
        ],
        "lines": [{"name": "gate", "points": [[0, 600], [1280, 600]], "left_to_right": "down", "right_to_left": "up"}],
    }
)


def people(rows: list[tuple[float, float, float, float, int, bool]]) -> Tracks:
    """Tracks from (x1, y1, x2, y2, track_id, confirmed)."""
    return tracks(*(track(tid, (x1, y1, x2, y2), confirmed=ok) for x1, y1, x2, y2, tid, ok in rows))


def result(t: Tracks, seq: int = 1, mono_ts: float = 10.0) -> FrameResult:
    return frame_result("cam", t, ts=mono_ts, index=seq, size=(W, H), wall_ts=1.7e9 + seq)


def overlay(res: FrameResult | None = None, **kw: object) -> Overlay:
    base: dict[str, object] = {
        "camera_name": "Lobby",
        "state": CameraState.ONLINE,
        "processed_fps": 5.0,
        "rules": RULES,
        "result": res,
        "occupancy": {"empty": {}, "busy": {"person": 2}},
        "line_counts": {"gate": {"down": {"person": 3}, "up": {}}},
        "ts": 1.7e9,
    }
    base.update(kw)
    return Overlay(**base)  # type: ignore[arg-type]


@pytest.fixture
def frame() -> np.ndarray:
    return np.full((H, W, 3), GREY, np.uint8)


def px(image: np.ndarray, x: float, y: float) -> np.ndarray:
    """The pixel at source coordinates (x, y) of a 1280x720 frame shown at 960x540."""
    return image[int(y * 0.75), int(x * 0.75)].astype(int)


def test_preview_size_fits_never_enlarges_and_is_even() -> None:
    assert preview_size(1280, 720, 960, 540) == (960, 540)
    assert preview_size(1920, 1080, 960, 960) == (960, 540)
    assert preview_size(720, 1280, 960, 540) == (302, 540)  # portrait: the height limits
    assert preview_size(640, 360, 960, 540) == (640, 360)
    w, h = preview_size(1001, 777, 500, 500)
    assert w % 2 == 0 and h % 2 == 0 and w <= 500 and h <= 500


def test_draws_at_preview_size_without_touching_the_source(frame: np.ndarray) -> None:
    out = Annotator(960, 540).draw(frame, overlay())
    assert out.shape == (540, 960, 3) and out.dtype == np.uint8
    assert (frame == GREY).all()
    small = np.full((360, 640, 3), GREY, np.uint8)
    assert Annotator(960, 540).draw(small, overlay()).shape == (360, 640, 3)


def test_zones_are_translucent_and_occupied_ones_stronger(frame: np.ndarray) -> None:
    out = Annotator(960, 540).draw(frame, overlay())
    outside, empty_zone, busy_zone = px(out, 500, 200), px(out, 200, 200), px(out, 0.6 * W, 0.7 * H)
    assert (outside == GREY).all()
    for inside in (empty_zone, busy_zone):
        assert (inside != GREY).any(), "the zone is tinted"
        assert np.abs(inside - GREY).max() < 128, "the picture still shows through"
    assert np.abs(busy_zone - GREY).sum() > np.abs(empty_zone - GREY).sum()


def test_tripwire_is_drawn_across_the_frame(frame: np.ndarray) -> None:
    out = Annotator(960, 540).draw(frame, overlay())
    for x in (30, 400, 1000):
        b, g, r = px(out, x, 600)
        assert r > 200 and g > 150 and b < 100, f"line colour at x={x}"


def test_confirmed_tentative_and_loitering_boxes(frame: np.ndarray) -> None:
    t = people([(400, 200, 500, 400, 1, True), (700, 100, 800, 300, 2, False), (900, 200, 1000, 400, 3, True)])
    out = Annotator(960, 540).draw(frame, overlay(result(t), loitering_ids=frozenset({3})))
    confirmed_edge = px(out, 400, 350)
    tentative_edge = px(out, 700, 250)
    loiter_edge = px(out, 900, 350)
    assert np.ptp(confirmed_edge) > 60, "a confirmed track's box is coloured"
    assert np.ptp(tentative_edge) < 10 and tentative_edge[0] > GREY, "a tentative track's box is thin grey"
    b, g, r = loiter_edge
    assert r > 200 and g < 100 and b < 100, "a loitering track's box is red"
    assert (px(out, 450, 300) == GREY).all(), "inside a box the picture is untouched"


def test_boxes_are_scaled_from_the_result_frame_size() -> None:
    # The pixels come at 640x360 while the result's coordinates are for 1280x720.
    small = np.full((360, 640, 3), GREY, np.uint8)
    t = people([(400, 200, 500, 400, 1, True)])
    out = Annotator(960, 540).draw(small, overlay(result(t), rules=RulesConfig()))
    assert np.ptp(out[175, 200].astype(int)) > 60, "left edge of the box at x=400/2"
    assert (out[175, 225] == GREY).all()


def test_trails_follow_confirmed_tracks_and_forget_vanished_ones(frame: np.ndarray) -> None:
    annotator = Annotator(960, 540, trail_s=2.0)
    for i in range(5):
        y = 200 + 40 * i
        t = people([(400, y - 100, 440, y, 7, True), (1100, 100, 1140, 200, 8, False)])
        out = annotator.draw(frame, overlay(result(t, seq=i + 1, mono_ts=10.0 + 0.2 * i), rules=RulesConfig()))
    assert len(annotator.trails) == 1, "tentative tracks leave no trail"
    assert len(annotator.trails.points(7)) == 5
    assert np.ptp(px(out, 420, 250)) > 60, "the trail runs along the path of the box's bottom centre"
    annotator.draw(frame, overlay(result(people([]), seq=6, mono_ts=11.2), rules=RulesConfig()))
    assert len(annotator.trails) == 0


def test_trails_keep_only_their_time_window() -> None:
    trails = Trails(seconds=1.0)
    for i in range(10):
        trails.update(result(people([(0, 0, 10, 10 + i, 1, True)]), seq=i + 1, mono_ts=float(i) * 0.5))
    assert len(trails.points(1)) == 3  # 3.5, 4.0, 4.5 s: within 1 s of the newest
    trails.update(result(people([(0, 0, 10, 50, 1, True)]), seq=10, mono_ts=99.0))  # same seq: ignored
    assert len(trails.points(1)) == 3


def test_header_shows_a_state_pill_unless_online(frame: np.ndarray) -> None:
    online = Annotator(960, 540).draw(frame, overlay())
    reconnecting = Annotator(960, 540).draw(frame, overlay(state=CameraState.RECONNECTING))
    assert online[5:20].mean() < GREY - 40, "the header band is dark"
    differs = np.any(online[:30] != reconnecting[:30], axis=2)
    assert differs.any() and not np.any(online[40:] != reconnecting[40:])
    orange = (reconnecting[:30, :, 2] > 200) & (reconnecting[:30, :, 1] > 120) & (reconnecting[:30, :, 0] < 40)
    assert orange.sum() > 100


def test_placeholder_names_the_camera_and_state() -> None:
    image = placeholder("Lobby", CameraState.OFFLINE, "offline: waiting for video", 640, 360)
    assert image.shape == (360, 640, 3)
    assert (image[150:200] != 32).any(), "the message is drawn in the middle"
    assert (image[40:140] == 32).all()


def test_real_frame_of_the_sample_clip(clip_360p: Path) -> None:
    with av.open(str(clip_360p)) as container:
        image = np.asarray(next(container.decode(video=0)).to_ndarray(format="bgr24"), np.uint8)
    t = people([(100, 100, 140, 200, 1, True)])
    res = frame_result("cam", t, ts=1.0, index=1, size=(640, 360), wall_ts=1.7e9)
    out = Annotator(960, 540).draw(image, overlay(res, rules=RulesConfig()))
    assert out.shape == (360, 640, 3)
    assert not np.array_equal(out, image)


def test_header_shows_a_no_motion_badge_while_the_detector_idles(frame: np.ndarray) -> None:
    plain = Annotator(960, 540).draw(frame, overlay())
    idle = Annotator(960, 540).draw(frame, overlay(no_motion=True))
    differs = np.any(plain[:30] != idle[:30], axis=2)
    assert differs.any() and not np.any(plain[40:] != idle[40:])
    assert differs[:, :80].sum() < differs.sum(), "drawn after the camera name"
