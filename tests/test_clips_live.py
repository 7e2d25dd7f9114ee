"""Event clips from real decoder processes: an RTSP camera (GStreamer's test server) and a looping file camera
record their encoded packets; a record request on the commands pipe comes back as a ready MP4 on the status pipe
that covers pre_s + post_s within one GOP, decodes end to end, and plays in Chromium from the clip API.
"""

from __future__ import annotations

import multiprocessing as mp
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import av
import pytest
from playwright.sync_api import sync_playwright

from streamsrv.api.app import create_app
from streamsrv.config.models import AppConfig
from streamsrv.events.model import EventSequencer
from streamsrv.ipc.messages import ClipStatus, RecordRequest
from streamsrv.ipc.signals import FramesReady
from streamsrv.runtime.decoders import Decoders
from streamsrv.runtime.server import StreamServer
from streamsrv.types import CameraState
from tests.support.fake_server import FakeServer
from tests.support.uvicorn_thread import serve_in_thread
from tests.support.waiting import wait_for
from tests.test_server_snapshots import FrameStore

pytestmark = pytest.mark.rtsp

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]
PRE_S, POST_S, GOP_S = 2.0, 2.0, 1.0
TRACK = {"track_id": 1, "label": "person", "confidence": 0.9, "bbox": (10, 10, 50, 90), "zone": "door"}


class Cameras:
    """Decoder processes for ``cfg``'s cameras (no inference), their states and the clip reports they send."""

    def __init__(self, cfg: AppConfig) -> None:
        ctx = mp.get_context("spawn")
        self.decoders = Decoders(cfg, uuid.uuid4().hex[:8], ctx, FramesReady(ctx), threading.RLock(), lambda m: None)
        self.states: dict[str, CameraState] = {}
        self.clips: list[ClipStatus] = []
        self.decoders.on_state_change(lambda cam, state, error: self.states.__setitem__(cam, state))
        self.decoders.on_clip(self.clips.append)
        self._stopping = threading.Event()
        self._status = threading.Thread(target=self.decoders.read_status, args=(self._stopping,), daemon=True)
        self.cfg = cfg

    def __enter__(self) -> Cameras:
        for cam in self.cfg.cameras:
            self.decoders.add(cam)
        self._status.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.decoders.retire(self.decoders.detach_all())
        self._stopping.set()
        self._status.join(10)

    def clip_around_now(self, camera_id: str, event_id: str) -> ClipStatus:
        """Ask for a clip around the camera's newest frame (as an event on it would) and wait for the report."""
        wait_for(lambda: self.states.get(camera_id) == CameraState.ONLINE, 60, f"{camera_id} online")
        first = self.decoders.latest_frame(camera_id)
        assert first is not None
        wait_for(
            lambda: (
                (f := self.decoders.latest_frame(camera_id)) is not None
                and f[0].video_ts - first[0].video_ts > PRE_S + GOP_S
            ),
            60,
            f"{camera_id}: {PRE_S + GOP_S}s of video",
        )
        frame = self.decoders.latest_frame(camera_id)
        assert frame is not None
        req = RecordRequest(event_id, frame[0].video_ts, PRE_S, POST_S, 60)
        assert self.decoders.request_clip(camera_id, req) is not None
        wait_for(lambda: any(event_id in c.event_ids for c in self.clips), 60, f"{camera_id}: the clip's report")
        return next(c for c in self.clips if event_id in c.event_ids)


def config(tmp_path: Path, cameras: list[dict[str, object]]) -> AppConfig:
    record = {"enabled": True, "pre_s": PRE_S, "post_s": POST_S}
    return AppConfig.model_validate(
        {
            "record": {"dir": str(tmp_path / "clips")},
            "cameras": [{**c, "detect_fps": 5, "hwaccel": "none", "record": record} for c in cameras],
        }
    )


def check_clip(status: ClipStatus) -> None:
    assert status.state == "ready", status
    with av.open(status.path) as container:
        stream = container.streams.video[0]
        frames = list(container.decode(stream))
    times = [f.time for f in frames]
    duration = max(times) - min(times)
    assert PRE_S + POST_S - 0.2 <= duration <= PRE_S + POST_S + GOP_S + 0.2, duration
    assert frames[0].key_frame and len(frames) >= (PRE_S + POST_S) * 25 * 0.9


@pytest.fixture
def rtsp_clip(rtsp_server_factory, clip_360p: Path, tmp_path: Path) -> ClipStatus:  # type: ignore[no-untyped-def]
    server = rtsp_server_factory(mounts={"cam": clip_360p})
    cfg = config(tmp_path, [{"id": "gate", "url": server.url("cam"), "open_timeout_s": 5, "read_timeout_s": 5}])
    with Cameras(cfg) as cams:
        return cams.clip_around_now("gate", "c" * 32)


def test_an_rtsp_camera_makes_a_clip_that_decodes_end_to_end(rtsp_clip: ClipStatus) -> None:
    check_clip(rtsp_clip)


@pytest.fixture(scope="module")
def hevc_camera_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 s of FFmpeg's test pattern encoded with libx265: 25 fps, a keyframe every second, no B-frames (the RTSP
    test server loops access units in decode order)."""
    path = tmp_path_factory.mktemp("hevc") / "pattern.mp4"
    with av.open("testsrc2=size=320x180:rate=25", format="lavfi") as pattern, av.open(str(path), "w") as out:
        stream = out.add_stream("libx265", rate=25)
        stream.width, stream.height, stream.pix_fmt = 320, 180, "yuv420p"
        stream.options = {"x265-params": "keyint=25:min-keyint=25:scenecut=0:bframes=0:log-level=error"}
        for i, frame in enumerate(pattern.decode(video=0)):
            if i >= 300:
                break
            out.mux(stream.encode(frame.reformat(format="yuv420p")))
        out.mux(stream.encode(None))
    return path


def test_an_h265_rtsp_camera_makes_an_h265_clip_that_decodes_end_to_end(
    rtsp_server_factory,  # type: ignore[no-untyped-def]
    hevc_camera_clip: Path,
    tmp_path: Path,
) -> None:
    server = rtsp_server_factory(mounts={"hevc": hevc_camera_clip})
    cfg = config(tmp_path, [{"id": "yard", "url": server.url("hevc"), "open_timeout_s": 5, "read_timeout_s": 5}])
    with Cameras(cfg) as cams:
        status = cams.clip_around_now("yard", "e" * 32)
        assert cams.decoders.stats("yard").codec == "hevc", "the camera sends H.265"
    with av.open(status.path) as container:
        video = container.streams.video[0]
        assert video.codec_context.name == "hevc" and video.codec_tag == "hvc1", "stream copy: H.265 in, H.265 out"
        assert (video.codec_context.width, video.codec_context.height) == (320, 180)
    check_clip(status)  # decodes end to end and covers pre_s + post_s within one GOP


def test_a_looping_file_camera_makes_a_clip_in_its_own_folder(clip_360p: Path, tmp_path: Path) -> None:
    cfg = config(tmp_path, [{"id": "hall", "url": str(clip_360p), "loop": True}])
    with Cameras(cfg) as cams:
        status = cams.clip_around_now("hall", "d" * 32)
    check_clip(status)
    assert status.event_ids == ("d" * 32,) and Path(status.path).parent.name == "hall"


class LiveClips(FrameStore):
    """The supervisor as a ``StreamServer`` sees it, with clips asked of and reported by real decoder processes."""

    def __init__(self, cams: Cameras) -> None:
        super().__init__()
        self.decoders = cams.decoders

    def request_clip(self, camera_id: str, req: RecordRequest) -> int | None:
        return self.decoders.request_clip(camera_id, req)

    def on_clip(self, callback: Callable[[ClipStatus], None]) -> None:
        self.decoders.on_clip(callback)

    def on_decoder_exit(self, callback: Callable[[str, int], None]) -> None:
        self.decoders.on_decoder_exit(callback)


def test_a_decoder_killed_while_recording_fails_its_clip_at_once(clip_360p: Path, tmp_path: Path) -> None:
    cfg = config(tmp_path, [{"id": "hall", "url": str(clip_360p), "loop": True}])
    record = cfg.cameras[0].record
    cfg.cameras[0].record = record.model_copy(update={"post_s": 60.0, "max_clip_s": 90.0})  # a minute to record
    with Cameras(cfg) as cams:
        server = StreamServer(cfg, supervisor=LiveClips(cams))  # type: ignore[arg-type]
        wait_for(lambda: cams.states.get("hall") == CameraState.ONLINE, 60, "hall online")
        frame = cams.decoders.latest_frame("hall")
        assert frame is not None
        event = EventSequencer("hall").make("zone.enter", time.time(), **TRACK)
        asked = server.request_clip(event, frame[0].video_ts)
        assert asked.clip is not None and asked.clip.state == "recording"
        process = cams.decoders.process("hall")
        assert process is not None
        process.kill()  # the decoder dies mid-clip (the watchdog, not running here, would restart it)
        wait_for(lambda: server.bus.history(type="clip.ready"), 15, "clip.ready, long before max_clip_s + 60 s")
    (lost,) = [r.event for r in server.bus.history(type="clip.ready")]
    assert lost.event_id == event.id and lost.clip is not None and lost.clip.state == "failed"
    assert "decoder stopped while recording" in (lost.clip.error or "")
    assert server.clips.outcomes == {"failed": 1} and not cams.clips, "no report came from the dead decoder"


@pytest.fixture
def clip_server(rtsp_clip: ClipStatus, tmp_path: Path) -> Iterator[tuple[str, FakeServer]]:
    """The real app (on a fake server that knows the clip) under uvicorn: its base URL and the server."""
    cfg = AppConfig.model_validate({"record": {"dir": str(Path(rtsp_clip.path).parents[1])}})
    server = FakeServer(cfg)
    server.clips.finish(rtsp_clip)
    with serve_in_thread(create_app(cfg, server=server)) as url:
        yield url, server


@pytest.mark.browser
def test_chromium_plays_the_clip_from_the_api_and_the_event_list(
    clip_server: tuple[str, FakeServer], rtsp_clip: ClipStatus
) -> None:
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian chromium is not installed")
    base, server = clip_server
    event_id = rtsp_clip.event_ids[0]
    url = f"{base}/api/events/{event_id}/clip.mp4"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(f"{base}/healthz")  # same origin as the clip
            page.set_content(f'<video id="v" muted preload="auto" src="{url}"></video>')
            page.wait_for_function("document.getElementById('v').readyState >= 2", timeout=60_000)
            duration = page.evaluate("document.getElementById('v').duration")
            error = page.evaluate("document.getElementById('v').error")
            assert error is None and duration > PRE_S + POST_S - 0.2

            # The dashboard: the event shows in the list, its clip.ready adds a button that plays the clip inline.
            page.goto(f"{base}/")
            page.wait_for_function("document.getElementById('feed-state').textContent === 'live'", timeout=60_000)
            seqr = EventSequencer("gate")
            ready = server.clips.state(event_id)
            assert ready is not None and ready.state == "ready"
            recording = ready.model_copy(update={"state": "recording"})
            entered = seqr.make("zone.enter", time.time(), clip=recording, **TRACK).model_copy(update={"id": event_id})
            server.bus.publish(entered)
            server.bus.publish(seqr.make("clip.ready", time.time(), event_id=event_id, clip=ready))
            page.click(".clip-toggle", timeout=30_000)
            page.wait_for_function("document.querySelector('video.clip')?.readyState >= 2", timeout=60_000)
        finally:
            browser.close()
