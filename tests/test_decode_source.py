"""Decoding real video: frame skipping by timestamp, downscaling, looping, error classification."""

from __future__ import annotations

import functools
import http.server
import itertools
import random
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from streamsrv.config.models import CameraConfig, ReconnectConfig
from streamsrv.decode.backoff import Backoff
from streamsrv.decode.source import FrameSkipper, VideoSource, is_permanent
from streamsrv.errors import SourceError, SourceTimeout, SourceUnavailable
from tests.support.processes import RtspServer


def test_skipper_spaces_frames_by_timestamp_not_count() -> None:
    s = FrameSkipper(fps=5)
    # variable frame rate: 25 fps then 10 fps; output stays ~5 fps
    stamps = [i / 25 for i in range(25)] + [1 + i / 10 for i in range(10)]
    kept = [t for t in stamps if s.due(t)]
    gaps = [b - a for a, b in itertools.pairwise(kept)]
    assert len(kept) == 10
    assert all(0.19 <= g <= 0.21 for g in gaps)


def test_skipper_restarts_after_a_gap_instead_of_bursting() -> None:
    s = FrameSkipper(fps=5)
    assert s.due(0.0)
    assert s.due(10.0)  # stream resumed after a stall
    assert not s.due(10.04)
    assert s.due(10.2)


def test_backoff_grows_to_its_cap_with_jitter() -> None:
    b = Backoff(ReconnectConfig(initial_s=0.5, max_s=4, multiplier=2, jitter=0.2), rng=random.Random(1))
    delays = [b.next_delay() for _ in range(8)]
    assert 0.4 <= delays[0] <= 0.6
    assert all(d <= 4 * 1.2 for d in delays)
    assert delays[-1] >= 4 * 0.8
    b.reset()
    assert b.next_delay() <= 0.6


def test_file_decodes_at_detect_fps_without_pacing(clip_360p: Path) -> None:
    src = VideoSource(CameraConfig(id="c", url=str(clip_360p), detect_fps=5, realtime=False))
    frames = list(src.frames())
    src.close()
    assert src.decoded == 341 and src.fps == 25.0 and src.codec == "h264"
    assert len(frames) == 69  # 341 frames at 25 fps, every 5th
    assert src.skipped == 341 - 69
    assert frames[0].image.shape == (360, 640, 3)
    assert [f.frame_index for f in frames[:3]] == [0, 5, 10]


def test_large_frames_are_downscaled_to_the_camera_limit(clip_720p: Path) -> None:
    cam = CameraConfig(id="c", url=str(clip_720p), detect_fps=1, realtime=False, max_width=640, max_height=640)
    src = VideoSource(cam)
    first = next(iter(src.frames()))
    src.close()
    assert first.image.shape == (360, 640, 3)


def test_realtime_file_is_paced_like_a_camera(clip_360p: Path) -> None:
    src = VideoSource(CameraConfig(id="c", url=str(clip_360p), detect_fps=25))
    start = time.monotonic()
    for frame in src.frames():
        if frame.frame_index >= 25:
            break
    src.close()
    assert time.monotonic() - start >= 0.9  # 25 frames of a 25 fps clip take a second of real time


def _lag_after_slow_reading(cam: CameraConfig, seconds: float) -> tuple[VideoSource, float, list[int]]:
    """Read a paced source at 10 fps (its CPU share starved, as it were); how far behind is the last frame?

    Behind what the source's own pace allows: arrival minus timestamp, over the smallest such difference seen.
    """
    src = VideoSource(cam)
    start = time.monotonic()
    offsets, indices = [], []
    for frame in src.frames():
        indices.append(frame.frame_index)
        offsets.append(time.monotonic() - frame.video_ts)
        if time.monotonic() - start > seconds:
            break
        time.sleep(0.1)
    src.close()
    return src, offsets[-1] - min(offsets), indices


def test_a_decoder_that_falls_behind_real_time_catches_up_at_keyframes(clip_360p: Path) -> None:
    cam = CameraConfig(id="c", url=str(clip_360p), detect_fps=25, loop=True, max_lag_s=0.5)
    src, lag, indices = _lag_after_slow_reading(cam, seconds=4)
    # 10 of 25 frames a second would leave the last frame 2.4 s behind; catching up keeps it within a
    # GOP (2 s at most in this clip) of the bound, and every frame not decoded is counted.
    assert src.dropped_behind > 0
    assert lag < 0.5 + 2.0
    assert indices[-1] + 1 == src.decoded + src.dropped_behind  # frame indices still count every frame
    assert indices == sorted(indices)


def test_without_a_lag_bound_a_slow_decoder_falls_behind(clip_360p: Path) -> None:
    cam = CameraConfig(id="c", url=str(clip_360p), detect_fps=25, max_lag_s=None)
    src, lag, _ = _lag_after_slow_reading(cam, seconds=3)
    assert src.dropped_behind == 0
    assert lag > 1.5


@pytest.mark.rtsp
def test_a_live_rtsp_camera_read_too_slowly_is_caught_up_at_keyframes(rtsp_server: RtspServer) -> None:
    """The same over a real RTSP connection, where the backlog would sit in socket buffers and grow for ever."""
    bounded = CameraConfig(id="c", url=rtsp_server.url("cam360"), detect_fps=25, max_lag_s=0.5)
    src, lag, indices = _lag_after_slow_reading(bounded, seconds=5)
    assert src.dropped_behind > 0
    assert lag < 0.5 + 2.0
    assert indices == sorted(indices)
    # on the other mount: the server may still be closing the first session's media
    unbounded = bounded.model_copy(update={"max_lag_s": None, "url": rtsp_server.url("cam720")})
    src, lag, _ = _lag_after_slow_reading(unbounded, seconds=5)
    assert src.dropped_behind == 0
    assert lag > 1.5


def test_looping_file_keeps_timestamps_rising(clip_360p: Path) -> None:
    src = VideoSource(CameraConfig(id="c", url=str(clip_360p), detect_fps=2, loop=True, realtime=False))
    stamps = []
    for frame in src.frames():
        stamps.append(frame.video_ts)
        if len(stamps) >= 35:  # past the 13.6 s end
            break
    src.close()
    assert stamps == sorted(stamps) and stamps[-1] > 14


@pytest.mark.parametrize(
    ("url", "message", "permanent"),
    [
        ("/nonexistent/clip.mp4", "not found", True),
        ("rtsp://127.0.0.1:9/stream", "connection refused", False),
    ],
)
def test_open_errors_are_classified(url: str, message: str, permanent: bool) -> None:
    src = VideoSource(CameraConfig(id="c", url=url, open_timeout_s=3, read_timeout_s=3))
    with pytest.raises(SourceError, match=message) as err:
        src.open()
    assert is_permanent(err.value) == permanent


def test_a_file_that_is_not_video(tmp_path: Path) -> None:
    junk = tmp_path / "notes.mp4"
    junk.write_bytes(b"this is not a video" * 100)
    with pytest.raises(SourceUnavailable, match="not a readable video"):
        VideoSource(CameraConfig(id="c", url=str(junk))).open()


def test_credentials_never_appear_in_errors() -> None:
    src = VideoSource(CameraConfig(id="c", url="rtsp://admin:hunter2@127.0.0.1:9/s", open_timeout_s=2))
    with pytest.raises(SourceError) as err:
        src.open()
    assert "hunter2" not in str(err.value) and "admin:***@" in str(err.value)


def test_keyframes_only_decodes_one_frame_per_gop(clip_360p: Path) -> None:
    src = VideoSource(CameraConfig(id="c", url=str(clip_360p), detect_fps=1, keyframes_only=True, realtime=False))
    frames = list(src.frames())
    src.close()
    assert src.decoded == 14  # 341 frames, a keyframe every 25
    assert len(frames) == 14


def _remux_to_mpegts(clip: Path, out: Path) -> None:
    """HTTP cameras send streamable containers (MPEG-TS, MJPEG), not seekable MP4."""
    import av

    with av.open(str(clip)) as src, av.open(str(out), "w", format="mpegts") as dst:
        stream = dst.add_stream_from_template(src.streams.video[0])
        for packet in src.demux(src.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                dst.mux(packet)


@pytest.fixture
def http_clip_url(clip_360p: Path, tmp_path: Path) -> Iterator[str]:
    _remux_to_mpegts(clip_360p, tmp_path / "cam.ts")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/cam.ts"
    server.shutdown()
    server.server_close()


def test_http_stream_is_decoded(http_clip_url: str) -> None:
    src = VideoSource(CameraConfig(id="c", url=http_clip_url, detect_fps=5, realtime=False))
    frames = [f for f, _ in zip(src.frames(), range(10), strict=False)]
    src.close()
    assert len(frames) == 10 and frames[0].image.shape == (360, 640, 3)


def test_http_not_found_is_permanent(http_clip_url: str) -> None:
    src = VideoSource(CameraConfig(id="c", url=http_clip_url + ".missing", open_timeout_s=3))
    with pytest.raises(SourceUnavailable, match="not found"):
        src.open()


@pytest.mark.rtsp
@pytest.mark.parametrize("transport", ["tcp", "udp"])
def test_rtsp_transports(rtsp_server: RtspServer, transport: str) -> None:
    cam = CameraConfig(id="c", url=rtsp_server.url("cam360"), detect_fps=25, rtsp_transport=transport)
    src = VideoSource(cam)
    frames = [f for f, _ in zip(src.frames(), range(15), strict=False)]
    src.close()
    assert len(frames) == 15 and frames[-1].image.shape == (360, 640, 3)


def test_a_server_that_accepts_and_says_nothing_is_a_timeout_not_bad_data() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    accepted: list[socket.socket] = []
    thread = threading.Thread(target=lambda: accepted.append(listener.accept()[0]), daemon=True)
    thread.start()
    try:
        src = VideoSource(CameraConfig(id="c", url=f"rtsp://127.0.0.1:{port}/s", open_timeout_s=2, read_timeout_s=2))
        with pytest.raises(SourceTimeout, match="no answer within 2s") as err:
            src.open()
        assert not is_permanent(err.value)
    finally:
        for conn in accepted:
            conn.close()
        listener.close()
