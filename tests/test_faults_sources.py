"""Faults that come from cameras, against the real pipeline (decoder processes, the real model, real servers).

One supervisor runs for the module with a ``steady`` camera (the 360p clip, looping); each test adds a faulty
camera beside it, checks the faulty one's outcome and that ``steady`` kept being processed, then removes it:

- a camera that accepts the TCP connection and then sends nothing (open/read timeout, not "not video"): it
  keeps retrying and comes online once a real RTSP server appears on that port;
- an HTTP camera whose MPEG-TS turns into random bytes mid-stream: it reconnects and comes back;
- an HTTP camera whose resolution changes mid-stream (360p, then 720p, one connection): frames of the new size
  go on through the same decoder and ring without a reconnect;
- a file that ends: ``offline``, the decoder exits with status 0 and is not restarted;
- a decoder hung in a native call (SIGSTOP): its heartbeat stops, the supervisor kills and restarts it.

RTSP server killed/restarted, an RTSP server hung (SIGSTOP) and a decoder SIGKILLed are in
tests/test_pipeline_rtsp.py and tests/test_pipeline.py; the fake cameras are in tests/support/fake_cameras.py.
"""

from __future__ import annotations

import os
import signal
import threading
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from streamsrv.config import parse_config
from streamsrv.config.models import CameraConfig
from streamsrv.runtime.supervisor import Supervisor
from streamsrv.types import CameraState, FrameResult
from tests.support.fake_cameras import HlsCamera, HttpTsCamera, Segment, SilentServer, mpegts
from tests.support.processes import RtspServerFactory
from tests.support.waiting import wait_for

pytestmark = pytest.mark.slow

# Short timeouts and back-off so faults are noticed and retried within seconds.
FAST = "open_timeout_s: 2, read_timeout_s: 2, stall_timeout_s: 3, reconnect: {initial_s: 0.3, max_s: 1}"


# --- the pipeline -------------------------------------------------------------------------------------------------


class Recorder:
    """FrameResults per camera, from the supervisor's results thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._results: dict[str, list[FrameResult]] = defaultdict(list)

    def __call__(self, result: FrameResult) -> None:
        with self._lock:
            self._results[result.camera_id].append(result)

    def of(self, camera_id: str) -> list[FrameResult]:
        with self._lock:
            return list(self._results[camera_id])

    def count(self, camera_id: str) -> int:
        with self._lock:
            return len(self._results[camera_id])


class StateLog:
    """Every camera state change, with its error, in order (the supervisor's state listeners)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._changes: dict[str, list[tuple[CameraState, str | None]]] = defaultdict(list)

    def __call__(self, camera_id: str, state: CameraState, error: str | None) -> None:
        with self._lock:
            self._changes[camera_id].append((state, error))

    def of(self, camera_id: str) -> list[tuple[CameraState, str | None]]:
        with self._lock:
            return list(self._changes[camera_id])

    def states(self, camera_id: str) -> list[CameraState]:
        return [state for state, _ in self.of(camera_id)]


@dataclass
class Pipeline:
    sup: Supervisor
    recorder: Recorder
    log: StateLog

    def state(self, camera_id: str) -> CameraState:
        return self.sup.camera_stats(camera_id).state

    def wait_processed(self, camera_id: str, more: int, timeout_s: float, what: str) -> None:
        target = self.recorder.count(camera_id) + more
        wait_for(lambda: self.recorder.count(camera_id) >= target, timeout_s, f"{more} more frames of {what}")

    def add(self, yaml_camera: str) -> CameraConfig:
        cam = parse_config(f"cameras:\n  - {yaml_camera}\n").cameras[0]
        self.sup.add_camera(cam)
        return cam


@pytest.fixture(scope="module")
def pipeline(clip_360p: Path, person_model: Path) -> Iterator[Pipeline]:
    cfg = parse_config(f"""
model: {{path: "{person_model}", labels: {{Normal: person, Fall: person}}}}
inference: {{threads: 1, max_batch: 4, stale_after_s: 5}}
capacity: {{degrade: false}}  # the bare pipeline: no governor lowering detect fps under overload
cameras:
  - {{id: steady, url: "{clip_360p}", detect_fps: 2, loop: true}}
""")
    sup = Supervisor(cfg, instance=f"test{os.getpid()}faults")
    recorder, log = Recorder(), StateLog()
    sup.subscribe(recorder)
    sup.on_state_change(log)
    sup.start()
    try:
        wait_for(lambda: recorder.count("steady") >= 2, 180, "the first frames of camera steady")
        yield Pipeline(sup, recorder, log)
    finally:
        sup.stop()
    assert not list(Path("/dev/shm").glob(f"streamsrv-test{os.getpid()}faults-*")), "frame rings left in /dev/shm"


@pytest.fixture
def camera_cleanup(pipeline: Pipeline) -> Iterator[list[str]]:
    """Ids appended here are removed from the pipeline after the test, whatever happened."""
    ids: list[str] = []
    yield ids
    for camera_id in ids:
        if camera_id in pipeline.sup.camera_ids():
            pipeline.sup.remove_camera(camera_id)


def test_a_camera_that_accepts_and_sends_nothing_keeps_retrying_and_recovers(
    pipeline: Pipeline, camera_cleanup: list[str], clip_360p: Path, rtsp_server_factory: RtspServerFactory
) -> None:
    silent = SilentServer()
    port = silent.port
    try:
        pipeline.add(f'{{id: mute, url: "rtsp://127.0.0.1:{port}/cam", detect_fps: 2, {FAST}}}')
        camera_cleanup.append("mute")
        wait_for(lambda: pipeline.sup.camera_stats("mute").reconnects >= 2, 60, "mute to retry more than once")
        assert len(silent.accepted) >= 2, "each retry reached the silent server"
        pipeline.wait_processed("steady", 2, 60, "steady while mute is silent")
        silent_period = pipeline.log.of("mute")
    finally:
        silent.close()
    # A timeout, so "reconnecting" (retry soon), never "error" (the source looks wrong) nor ever online.
    assert [state for state, _ in silent_period] == [CameraState.RECONNECTING], silent_period
    assert "no answer within 2s" in (silent_period[0][1] or ""), silent_period

    # A real camera appears on the same port: a later retry finds it.
    rtsp = rtsp_server_factory(mounts={"cam": clip_360p}, port=port)
    try:
        wait_for(lambda: pipeline.state("mute") == CameraState.ONLINE, 60, "mute online on the real server")
        pipeline.wait_processed("mute", 2, 60, "mute from the real server")
        stats = pipeline.sup.camera_stats("mute")
        assert stats.error is None and stats.decoder_restarts == 0, stats
    finally:
        pipeline.sup.remove_camera("mute")
        rtsp.stop()


def test_a_stream_that_turns_to_garbage_reconnects_and_recovers(
    pipeline: Pipeline, camera_cleanup: list[str], clip_360p: Path
) -> None:
    head = mpegts(clip_360p, seconds=6)
    whole = mpegts(clip_360p)
    # First connection: 6 s of good video, then random bytes at the same rate until the client gives up;
    # later connections: the whole clip, good.
    camera = HttpTsCamera(lambda n: [Segment(head, 6.0), Segment(None, 6.0)] if n == 0 else [Segment(whole, 13.6)])
    try:
        pipeline.add(f'{{id: noisy, url: "{camera.url}", detect_fps: 2, {FAST}}}')
        camera_cleanup.append("noisy")
        wait_for(lambda: pipeline.state("noisy") == CameraState.ONLINE, 60, "noisy online")
        steady_before = pipeline.recorder.count("steady")
        wait_for(lambda: camera.connections >= 2, 60, "noisy to give up on the garbage and reconnect")
        wait_for(lambda: pipeline.log.states("noisy")[-1:] == [CameraState.ONLINE], 60, "noisy online again")
        first_connection = len(pipeline.recorder.of("noisy"))
        pipeline.wait_processed("noisy", 2, 60, "noisy after the garbage")
        pipeline.wait_processed("steady", 1, 60, "steady")

        changes = pipeline.log.of("noisy")
        assert [state for state, _ in changes] == [CameraState.ONLINE, CameraState.RECONNECTING, CameraState.ONLINE]
        assert "timed out" in (changes[1][1] or ""), changes
        stats = pipeline.sup.camera_stats("noisy")
        assert stats.reconnects >= 1 and stats.decoder_restarts == 0, stats
        assert all(
            (r.frame.width, r.frame.height) == (640, 360) for r in pipeline.recorder.of("noisy")[first_connection:]
        )
        assert pipeline.recorder.count("steady") > steady_before
    finally:
        camera.close()


def test_a_resolution_change_mid_stream_goes_on_at_the_new_size(
    pipeline: Pipeline, camera_cleanup: list[str], clip_360p: Path, clip_720p: Path
) -> None:
    # One connection: 6 s at 640x360, then the 720p clip continuing the timestamps, as a camera whose
    # resolution is changed by its owner mid-stream.
    stream = [Segment(mpegts(clip_360p, seconds=6), 6.0), Segment(mpegts(clip_720p, 8, offset_s=6.0), 8.0)]
    camera = HttpTsCamera(lambda n: stream)
    try:
        pipeline.add(f'{{id: zoom, url: "{camera.url}", detect_fps: 2, max_width: 1280, max_height: 720, {FAST}}}')
        camera_cleanup.append("zoom")

        def sizes() -> list[tuple[int, int]]:
            return [(r.frame.width, r.frame.height) for r in pipeline.recorder.of("zoom")]

        wait_for(lambda: (640, 360) in sizes(), 60, "zoom's frames at 640x360")
        wait_for(lambda: (1280, 720) in sizes(), 60, "zoom's frames at 1280x720")
        stats = pipeline.sup.camera_stats("zoom")
        assert camera.connections == 1, "the new size came on the same connection"
        assert stats.reconnects == 0 and stats.decoder_restarts == 0, stats
        assert pipeline.log.states("zoom") == [CameraState.ONLINE]
        seen = sizes()
        assert set(seen) == {(640, 360), (1280, 720)}, seen
        assert seen.index((1280, 720)) > max(i for i, size in enumerate(seen) if size == (640, 360))
        # Boxes are in the new frame's pixels: some reach past the old 640x360 frame.
        boxes = [r.tracks.xyxy for r in pipeline.recorder.of("zoom") if r.frame.width == 1280 and len(r.tracks)]
        assert boxes and max(float(b[:, 2].max()) for b in boxes) > 640
        latest = pipeline.sup.latest_frame("zoom")
        assert latest is not None and latest[1].shape == (720, 1280, 3)
    finally:
        camera.close()


def test_a_file_that_ends_goes_offline_and_is_not_restarted(
    pipeline: Pipeline, camera_cleanup: list[str], clip_360p: Path
) -> None:
    pipeline.add(f'{{id: tape, url: "{clip_360p}", detect_fps: 2, realtime: false}}')
    camera_cleanup.append("tape")
    wait_for(lambda: pipeline.state("tape") == CameraState.OFFLINE, 60, "tape offline at the end of the file")
    process = pipeline.sup.decoders.process("tape")
    assert process is not None
    process.join(10)
    assert process.exitcode == 0
    # A few watchdog rounds later it is still the same finished process: an ended file is not restarted.
    rounds = pipeline.sup.camera_stats("steady").frames_processed
    wait_for(lambda: pipeline.sup.camera_stats("steady").frames_processed >= rounds + 2, 60, "steady to go on")
    assert pipeline.sup.decoders.process("tape") is process
    stats = pipeline.sup.camera_stats("tape")
    assert stats.state == CameraState.OFFLINE and stats.error == "end of file", stats
    assert stats.decoder_restarts == 0 and stats.reconnects == 0, stats
    assert pipeline.log.states("tape")[-1:] == [CameraState.OFFLINE]


def test_sources_that_smuggle_in_other_protocols_fail_clearly_and_alone(
    pipeline: Pipeline, camera_cleanup: list[str], clip_360p: Path, tmp_path: Path
) -> None:
    # An HLS playlist over HTTP whose segment is a local file, and a path that FFmpeg would read as its concat
    # protocol: each goes to `error` with a message saying what failed, and steady goes on.
    hls = HlsCamera(tmp_path / "www", clip_360p)
    local = tmp_path / "local.ts"
    local.write_bytes(hls.segment.read_bytes())
    try:
        sneaky = hls.playlist("sneaky.m3u8", f"file://{local}")
        pipeline.add(f'{{id: playlist, url: "{sneaky}", {FAST}}}')
        pipeline.add(f'{{id: concat, url: "concat:{clip_360p}|{clip_360p}", {FAST}}}')
        camera_cleanup.extend(["playlist", "concat"])
        for camera_id in ("playlist", "concat"):
            wait_for(lambda c=camera_id: pipeline.state(c) == CameraState.ERROR, 60, f"{camera_id} in error")
        assert "sneaky.m3u8: not a readable video stream" in (pipeline.sup.camera_stats("playlist").error or "")
        assert f"concat:{clip_360p}|{clip_360p}: not found" in (pipeline.sup.camera_stats("concat").error or "")
        assert pipeline.sup.camera_stats("concat").frames_decoded == 0
        pipeline.wait_processed("steady", 2, 60, "steady beside the refused sources")
    finally:
        hls.close()


def test_removing_a_camera_whose_decoder_is_stuck_does_not_stall_the_others(
    pipeline: Pipeline, camera_cleanup: list[str], clip_360p: Path
) -> None:
    pipeline.add(f'{{id: stuck, url: "{clip_360p}", detect_fps: 2, loop: true, {FAST}}}')
    camera_cleanup.append("stuck")
    pipeline.wait_processed("stuck", 1, 60, "stuck")
    decoder = pipeline.sup.decoders.process("stuck")
    assert decoder is not None and decoder.pid is not None
    os.kill(decoder.pid, signal.SIGSTOP)  # like a decoder inside FFmpeg: it only goes with SIGKILL, seconds later
    remover = threading.Thread(target=pipeline.sup.remove_camera, args=("stuck",))
    try:
        remover.start()
        wait_for(lambda: "stuck" not in pipeline.sup.camera_ids(), 10, "stuck to leave the camera list")
        # while its decoder is still being stopped, the other cameras' results, stats and config go on
        pipeline.wait_processed("steady", 1, 60, "steady while stuck's decoder is being stopped")
        assert pipeline.sup.camera_stats("steady").frames_processed > 0
        assert remover.is_alive(), "the removal finished first, so this test proves nothing"
        remover.join(30)
    finally:
        if decoder.is_alive():
            os.kill(decoder.pid, signal.SIGCONT)
    assert not remover.is_alive() and decoder.exitcode == -signal.SIGKILL
    assert not list(Path("/dev/shm").glob(f"streamsrv-test{os.getpid()}faults-stuck-*")), "its ring is left"


def test_a_decoder_hung_in_a_native_call_is_killed_and_restarted(
    pipeline: Pipeline, camera_cleanup: list[str], clip_360p: Path
) -> None:
    pipeline.add(f'{{id: frozen, url: "{clip_360p}", detect_fps: 2, loop: true, {FAST}}}')
    camera_cleanup.append("frozen")
    pipeline.wait_processed("frozen", 2, 60, "frozen")
    hung = pipeline.sup.decoders.process("frozen")
    assert hung is not None and hung.pid is not None
    # SIGSTOP: alive but silent, like a decoder stuck in FFmpeg; only the heartbeat watchdog can notice.
    os.kill(hung.pid, signal.SIGSTOP)
    try:
        # open + read + stall timeouts + the margin: 2 + 2 + 3 + 5 s, then the restart back-off.
        wait_for(lambda: pipeline.sup.camera_stats("frozen").decoder_restarts == 1, 60, "the hung decoder's restart")
    finally:
        if hung.is_alive():
            os.kill(hung.pid, signal.SIGCONT)
    assert hung.exitcode == -signal.SIGKILL
    restarted = pipeline.sup.decoders.process("frozen")
    assert restarted is not None and restarted.pid != hung.pid
    pipeline.wait_processed("frozen", 2, 60, "frozen after its restart")
    assert pipeline.state("frozen") == CameraState.ONLINE
