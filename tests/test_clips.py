"""Event clips without processes: the recorder fed by a real ``VideoSource`` on the 360p clip cuts MP4s by stream
copy (the packets' bytes unchanged), overlapping events share one file, a full or read-only disk skips the clip,
the ``ClipBook`` keeps retention, and the API serves clips with range requests.

tests/test_clips_live.py runs the same through real decoder processes (RTSP and file cameras) and Chromium.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import av
import pytest

from streamsrv.config.models import CameraConfig
from streamsrv.decode.recorder import ClipRecorder
from streamsrv.decode.source import VideoSource
from streamsrv.events.clips import ClipBook
from streamsrv.ipc.messages import ClipStatus, RecordRequest
from tests.support.fake_server import app_config, serve_in_process

EVENT_A, EVENT_B = "a" * 32, "b" * 32
GOP_S = 1.0  # the 360p clip has a keyframe every 25 frames at 25 fps
FRAME_S = 0.04


def record(
    clip: Path,
    clip_dir: Path,
    requests: list[tuple[str, float]],
    until_s: float,
    pre_s: float = 2.0,
    post_s: float = 2.0,
) -> list[ClipStatus]:
    """Play ``clip`` through a recorder, asking for a clip at each (event id, pts) once the frame at pts is out."""
    cam = CameraConfig.model_validate(
        {
            "id": "door",
            "url": str(clip),
            "realtime": False,
            "record": {"enabled": True, "pre_s": pre_s, "post_s": post_s},
        }
    )
    reports: list[ClipStatus] = []
    recorder = ClipRecorder(cam, clip_dir, reports.append)
    src = VideoSource(cam, tap=recorder)
    pending = sorted(requests, key=lambda r: r[1])
    try:
        for frame in src.frames():
            while pending and frame.video_ts >= pending[0][1]:
                event_id, ts = pending.pop(0)
                extend = event_id.endswith("+")  # "id+": the event id's event goes on
                recorder.request(RecordRequest(event_id.rstrip("+"), ts, pre_s, post_s, 60.0, extend_only=extend))
            if frame.video_ts >= until_s:
                break
    finally:
        src.close()
        recorder.close()
    return reports


def source_packets(clip: Path, start_s: float, end_s: float) -> list[bytes]:
    with av.open(str(clip)) as container:
        stream = container.streams.video[0]
        return [
            bytes(p)
            for p in container.demux(stream)
            if p.dts is not None
            and start_s - 1e-6 <= float(p.pts * stream.time_base)
            and float(p.dts * stream.time_base) <= end_s
        ]


def clip_facts(path: Path) -> tuple[float, int, list[bytes]]:
    """Duration (s), frames decoded end to end, and the packets' bytes of an MP4."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        packets = [bytes(p) for p in container.demux(stream) if p.size]
    with av.open(str(path)) as container:
        frames = list(container.decode(video=0))
    times = [f.time for f in frames]
    return max(times) - min(times) + FRAME_S, len(frames), packets


def test_a_clip_covers_pre_event_post_from_the_keyframe_before_by_stream_copy(clip_360p: Path, tmp_path: Path) -> None:
    [status] = record(clip_360p, tmp_path, [(EVENT_A, 4.5)], until_s=8.0)
    assert status.state == "ready", status
    assert status.event_ids == (EVENT_A,)
    path = Path(status.path)
    assert path == tmp_path / "door" / f"{EVENT_A}.mp4" and status.bytes == path.stat().st_size
    duration, frames, packets = clip_facts(path)
    # pre_s + post_s, plus what reaches back to the keyframe before 2.5 s (2.0 s): within one GOP
    assert 4.0 <= duration <= 4.0 + GOP_S + FRAME_S
    assert frames == round(duration / FRAME_S)
    assert packets == source_packets(clip_360p, 2.0, 6.5), "the clip's packets are the camera's, unchanged"


def test_overlapping_events_share_one_clip_that_runs_past_the_last(clip_360p: Path, tmp_path: Path) -> None:
    [status] = record(clip_360p, tmp_path, [(EVENT_A, 3.0), (EVENT_B, 4.2)], until_s=8.0)
    assert status.state == "ready" and status.event_ids == (EVENT_A, EVENT_B)
    duration, _, _ = clip_facts(Path(status.path))
    assert 3.0 + 2.0 + 0.2 <= duration <= 4.2 + 2.0 + FRAME_S  # from the keyframe at 1.0 s to 6.2 s


def test_an_event_that_goes_on_keeps_its_clip_open_and_never_starts_one(clip_360p: Path, tmp_path: Path) -> None:
    going_on = [(EVENT_A + "+", 4.0), (EVENT_A + "+", 5.0), (EVENT_B + "+", 5.5)]  # B has no clip: ignored
    [status] = record(clip_360p, tmp_path, [(EVENT_A, 3.0), *going_on], until_s=9.0, post_s=1.0)
    assert status.state == "ready" and status.event_ids == (EVENT_A,)
    duration, _, _ = clip_facts(Path(status.path))
    assert 5.0 - FRAME_S <= duration <= 5.0 + FRAME_S  # the keyframe at 1.0 s through 5.0 + post_s


@pytest.fixture(scope="module")
def hevc_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 s of FFmpeg's test pattern in H.265, 25 fps, a keyframe every second."""
    path = tmp_path_factory.mktemp("hevc") / "pattern.mp4"
    with av.open("testsrc2=size=320x180:rate=25", format="lavfi") as pattern, av.open(str(path), "w") as out:
        stream = out.add_stream("libx265", rate=25)
        stream.width, stream.height, stream.pix_fmt = 320, 180, "yuv420p"
        stream.options = {"x265-params": "keyint=25:min-keyint=25:scenecut=0:log-level=error"}
        for i, frame in enumerate(pattern.decode(video=0)):
            if i >= 200:
                break
            out.mux(stream.encode(frame.reformat(format="yuv420p")))
        out.mux(stream.encode(None))
    return path


def test_an_h265_camera_gives_an_h265_clip(hevc_clip: Path, tmp_path: Path) -> None:
    [status] = record(hevc_clip, tmp_path, [(EVENT_A, 4.5)], until_s=7.5)
    assert status.state == "ready", status
    with av.open(status.path) as container:
        video = container.streams.video[0]
        assert video.codec_context.name == "hevc" and video.codec_tag == "hvc1"  # the tag Safari plays
    duration, frames, packets = clip_facts(Path(status.path))
    assert 4.0 <= duration <= 4.0 + GOP_S + FRAME_S and frames == round(duration / FRAME_S)
    assert packets == source_packets(hevc_clip, 2.0, 6.5)


@pytest.fixture
def tiny_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs: smaller than any clip (needs root, as the test image runs)."""
    where = tmp_path / "full"
    where.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(where)], check=False).returncode:
        pytest.skip("cannot mount a tmpfs here (not root?)")
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=True)


def test_a_full_disk_skips_the_clip_and_leaves_no_part_file(clip_360p: Path, tiny_tmpfs: Path) -> None:
    [status] = record(clip_360p, tiny_tmpfs, [(EVENT_A, 4.5)], until_s=8.0)
    assert status.state == "skipped" and "No space left" in (status.error or ""), status
    assert not list(tiny_tmpfs.rglob("*.mp4")) and not list(tiny_tmpfs.rglob("*.part"))


def test_a_read_only_directory_skips_the_clip(clip_360p: Path, tiny_tmpfs: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(tiny_tmpfs)], check=True)
    [status] = record(clip_360p, tiny_tmpfs, [(EVENT_A, 4.5)], until_s=8.0)
    assert status.state == "skipped" and "Read-only" in (status.error or ""), status


def test_the_book_skips_clips_over_max_bytes_and_expires_old_ones(clip_360p: Path, tmp_path: Path) -> None:
    [first] = record(clip_360p, tmp_path, [(EVENT_A, 4.5)], until_s=8.0)
    small = ClipBook(tmp_path, max_bytes=first.bytes - 1, max_age_s=3600)
    assert small.file_count == 1, "files of an earlier run are adopted"
    [(event_id, clip)] = small.finish(first)
    assert (event_id, clip.state) == (EVENT_A, "failed") and "max_bytes" in (clip.error or "")
    assert small.outcomes["skipped"] == 1 and not Path(first.path).exists()

    [second] = record(clip_360p, tmp_path, [(EVENT_B, 4.5)], until_s=8.0)
    book = ClipBook(tmp_path / "elsewhere", max_bytes=10**9, max_age_s=60)
    [(_, clip)] = book.finish(second)
    assert clip.state == "ready" and book.path(EVENT_B) == Path(second.path)
    book.sweep(now=Path(second.path).stat().st_mtime + 3600)
    assert book.state(EVENT_B) is not None and book.state(EVENT_B).state == "expired"  # type: ignore[union-attr]
    assert book.path(EVENT_B) is None and not Path(second.path).exists() and book.outcomes["expired"] == 1


def test_the_api_serves_a_clip_with_range_requests_behind_the_api_key(clip_360p: Path, tmp_path: Path) -> None:
    [status] = record(clip_360p, tmp_path / "clips", [(EVENT_A, 4.5)], until_s=8.0)
    cfg = app_config(server={"api_key": "k"}, record={"dir": str(tmp_path / "clips")})
    with serve_in_process(cfg, api_key="k") as (http, server):
        assert http.get(f"/api/events/{EVENT_B}/clip.mp4").status_code == 404
        server.clips.start(EVENT_B)
        assert "recording" in http.get(f"/api/events/{EVENT_B}/clip.mp4").json()["detail"]
        server.clips.finish(status)
        whole = http.get(f"/api/events/{EVENT_A}/clip.mp4")
        assert whole.status_code == 200 and whole.headers["content-type"] == "video/mp4"
        assert whole.content == Path(status.path).read_bytes()
        part = http.get(f"/api/events/{EVENT_A}/clip.mp4", headers={"Range": "bytes=100-199"})
        assert part.status_code == 206 and part.content == whole.content[100:200]
        assert part.headers["content-range"] == f"bytes 100-199/{len(whole.content)}"
        assert http.get(f"/api/events/{EVENT_A}/clip.mp4", headers={"Authorization": ""}).status_code == 401
        metrics = http.get("/metrics").text
        assert 'streamsrv_clips_total{outcome="ready"} 1.0' in metrics and "streamsrv_clip_files 1.0" in metrics
