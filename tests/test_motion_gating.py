"""Motion gating: due frames without motion skip the detector, masks are ignored, still scenes are refreshed every
max_interval_s, and the config keeps max_interval_s within the tracker's lost-track buffer."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from pydantic import ValidationError

from streamsrv.analyze import open_video
from streamsrv.config.models import AppConfig, CameraConfig
from streamsrv.config.motion import MotionConfig
from streamsrv.decode.motion import MotionGate
from streamsrv.runtime.stats import RING_COUNTERS, CameraStats

FPS = 10


def _still(h: int = 180, w: int = 320) -> np.ndarray:
    rng = np.random.default_rng(0)
    return (rng.integers(60, 200, (h, w, 3))).astype(np.uint8)


def _with_square(frame: np.ndarray, x: int, y: int, size: int = 60, value: int = 255) -> np.ndarray:
    out = frame.copy()
    out[y : y + size, x : x + size] = value
    return out


@pytest.fixture
def flashing_corner_clip(tmp_path: Path) -> Path:
    """3 s at 10 fps of a still scene where only a square in the top-left corner flashes (a TV screen)."""
    path = tmp_path / "flashing.mp4"
    still = _still()
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = 320, 180, "yuv420p"
        stream.time_base = Fraction(1, FPS)
        for i in range(3 * FPS):
            image = _with_square(still, 10, 10, value=255 if i % 2 else 0)
            frame = av.VideoFrame.from_ndarray(image, format="bgr24")
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def test_still_frames_are_skipped_and_refreshed_every_max_interval() -> None:
    gate = MotionGate(MotionConfig(max_interval_s=1.0))
    still = _still()
    handed = [t for t in (i / FPS for i in range(35)) if gate.check(still, t)]
    assert handed == pytest.approx([0.0, 1.0, 2.0, 3.0])
    assert gate.skipped_no_motion == 31 and gate.handed == 4


def test_an_object_that_appears_is_handed_on_in_the_same_due_frame() -> None:
    gate = MotionGate(MotionConfig())
    still = _still()
    for i in range(5):
        gate.check(still, i / FPS)
    assert gate.check(_with_square(still, 150, 80), 0.5)  # 0.5 s after the last handed frame: motion, not the timer
    assert gate.last_boxes


def test_gating_off_hands_every_due_frame() -> None:
    gate = MotionGate(MotionConfig(enabled=False))
    assert all(gate.check(_still(), i / FPS) for i in range(20))
    assert gate.skipped_no_motion == 0


def test_motion_inside_a_mask_is_ignored(flashing_corner_clip: Path) -> None:
    def handed(motion: dict[str, object]) -> tuple[int, int]:
        cam = CameraConfig.model_validate({"id": "tv", "url": str(flashing_corner_clip), "motion": motion})
        video = open_video(str(flashing_corner_clip), cam)
        frames = sum(1 for _ in video.frames())
        video.source.close()
        return frames, video.gate.skipped_no_motion

    assert handed({}) == (30, 0)  # the flashing square is motion
    mask = {"polygon": [[0, 0], [0.3, 0], [0.3, 0.5], [0, 0.5]], "units": "norm"}
    assert handed({"mask": [mask]}) == (3, 27)  # masked: only the once-a-second refresh
    mask_px = {"polygon": [[0, 0], [96, 0], [96, 90], [0, 90]]}
    assert handed({"mask": [mask_px]}) == (3, 27)


def test_analyze_can_turn_gating_off(flashing_corner_clip: Path) -> None:
    cam = CameraConfig.model_validate(
        {"id": "tv", "url": str(flashing_corner_clip), "motion": {"mask": [{"polygon": [[0, 0], [96, 0], [96, 90]]}]}}
    )
    video = open_video(str(flashing_corner_clip), cam, motion_gating=False)
    assert sum(1 for _ in video.frames()) == 30
    video.source.close()


def test_max_interval_must_not_exceed_the_lost_track_buffer() -> None:
    AppConfig.model_validate({"cameras": [{"id": "a", "url": "a.mp4"}]})  # the defaults fit
    assert MotionConfig().max_interval_s <= AppConfig().tracker.lost_track_s
    with pytest.raises(ValidationError, match=r"max_interval_s \(3.0\) exceeds tracker.lost_track_s \(2.0\)"):
        AppConfig.model_validate({"cameras": [{"id": "a", "url": "a.mp4", "motion": {"max_interval_s": 3}}]})
    AppConfig.model_validate(  # a longer buffer allows it; gating off needs no check
        {"tracker": {"lost_track_s": 5}, "cameras": [{"id": "a", "url": "a.mp4", "motion": {"max_interval_s": 3}}]}
    )
    AppConfig.model_validate(
        {"cameras": [{"id": "a", "url": "a.mp4", "motion": {"enabled": False, "max_interval_s": 3}}]}
    )


def test_mask_coordinates_are_checked_like_zones() -> None:
    with pytest.raises(ValidationError, match=r"within 0\.\.1"):
        MotionConfig.model_validate({"mask": [{"polygon": [[0, 0], [2, 0], [0, 1]], "units": "norm"}]})


def test_skipped_no_motion_is_read_from_the_ring_into_stats() -> None:
    assert "skipped_no_motion" in RING_COUNTERS
    assert CameraStats.model_fields["skipped_no_motion"].default == 0


# -- the real model on real clips (slow) ------------------------------------------------------------------------
ROOM_STILL_S = 5.5  # the room clip shows no motion before about 6 s (../shared/README.md)


def _app(person_model: Path) -> AppConfig:
    return AppConfig.model_validate(
        {
            "model": {"path": str(person_model), "labels": {"Normal": "person", "Fall": "person"}},
            "inference": {"threads": 1, "device": "cpu"},
        }
    )


@pytest.mark.slow
def test_room_clip_skips_still_frames_and_refreshes_every_max_interval(person_model: Path, shared_dir: Path) -> None:
    from streamsrv.analyze import Analyzer

    clip = shared_dir / "media" / "room_walkins_432p.mp4"
    analyzer = Analyzer(_app(person_model))
    stamps = []
    for result in analyzer.run(str(clip)):
        if result.frame.video_ts > 9.0:
            break
        stamps.append(result.frame.video_ts)
    assert analyzer.gate is not None
    still = [t for t in stamps if t < ROOM_STILL_S]
    assert len(still) <= ROOM_STILL_S + 1, f"still frames went to the detector: {still}"
    assert analyzer.gate.skipped_no_motion >= 40
    gaps = np.diff(stamps)
    assert gaps.max() <= 1.0 + 1e-6, "the detector ran at least every max_interval_s"
    walking = [t for t in stamps if 6.0 <= t <= 8.0]
    assert len(walking) >= 15, "the walk-in (6-8 s) is detected on (nearly) every due frame"


@pytest.mark.slow
def test_a_crossing_is_counted_the_same_with_gating(person_model: Path, clip_360p: Path) -> None:
    from streamsrv.analyze import Analyzer

    camera = CameraConfig.model_validate(
        {
            "id": "concourse",
            "url": str(clip_360p),
            "rules": {"lines": [{"name": "mid", "units": "norm", "points": [[0, 0.55], [1, 0.55]]}]},
        }
    )
    analyzer = Analyzer(_app(person_model))

    def counts(gating: bool) -> tuple[dict[str, object], int]:
        records = analyzer.records(str(clip_360p), camera, detect_fps=5, motion_gating=gating)
        summary = next(r for r in records if r["type"] == "summary")
        return summary["line_counts"], summary["handed"]

    gated, handed = counts(True)
    plain, every = counts(False)
    assert sum(sum(d.values()) for d in gated["mid"].values()) >= 1  # type: ignore[union-attr]
    assert gated == plain
    assert handed <= every


def test_the_decoder_process_counts_held_back_frames_in_its_ring(flashing_corner_clip: Path) -> None:
    import multiprocessing

    from streamsrv.decode.process import _Decoder
    from streamsrv.decode.source import VideoSource
    from streamsrv.ipc.frame_ring import FrameRing
    from streamsrv.ipc.signals import FramesReady, StopFlag

    ctx = multiprocessing.get_context("spawn")
    cam = CameraConfig.model_validate(
        {
            "id": "tv",
            "url": str(flashing_corner_clip),
            "realtime": False,
            "detect_fps": 10,
            "motion": {"mask": [{"polygon": [[0, 0], [96, 0], [96, 90], [0, 90]]}]},
        }
    )
    ring = FrameRing.create(f"test-motion-{id(cam)}", 320, 180)
    status, _ = ctx.Pipe()
    try:
        decoder = _Decoder(cam, ring, FramesReady(ctx), status, StopFlag(ctx))
        assert decoder._stream(VideoSource(cam))
        assert ring.counter("skipped_no_motion") >= 20
        assert ring.latest_seq + ring.counter("skipped_no_motion") == 30
    finally:
        ring.close()
        ring.unlink()
