"""RTSP cameras against a real GStreamer RTSP server: online, server killed, restarted, stalled."""

from __future__ import annotations

import os
import signal
import threading
from collections import Counter
from pathlib import Path

import pytest

from streamsrv.config import parse_config
from streamsrv.runtime.supervisor import Supervisor
from streamsrv.types import CameraState, FrameResult
from tests.support.processes import RtspServer
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.rtsp]


def _supervisor(yaml_cameras: str, person_model: Path) -> tuple[Supervisor, Counter[str]]:
    cfg = parse_config(f"""
model: {{path: "{person_model}", labels: {{Normal: person, Fall: person}}}}
inference: {{threads: 1, max_batch: 4}}
capacity: {{degrade: false}}  # the bare pipeline: no governor lowering detect fps under overload
cameras:
{yaml_cameras}
""")
    sup = Supervisor(cfg, instance=f"test{os.getpid()}rtsp")
    processed: Counter[str] = Counter()
    lock = threading.Lock()

    def count(result: FrameResult) -> None:
        with lock:
            processed[result.camera_id] += 1

    sup.subscribe(count)
    return sup, processed


def test_rtsp_camera_reconnects_while_others_keep_processing(
    rtsp_server: RtspServer, clip_360p: Path, person_model: Path
) -> None:
    sup, processed = _supervisor(
        f"""  - {{id: gate, url: "{rtsp_server.url("cam360")}", detect_fps: 5, read_timeout_s: 3, open_timeout_s: 3,
       reconnect: {{initial_s: 0.3, max_s: 1}}}}
  - {{id: lobby, url: "{clip_360p}", detect_fps: 5, loop: true}}""",
        person_model,
    )
    sup.start()
    try:
        wait_for(lambda: processed["gate"] >= 3, 120, "frames from the RTSP camera")
        assert sup.camera_stats("gate").state == CameraState.ONLINE

        rtsp_server.kill()
        wait_for(lambda: sup.camera_stats("gate").state == CameraState.RECONNECTING, 30, "gate reconnecting")
        lobby_before = processed["lobby"]
        wait_for(lambda: processed["lobby"] >= lobby_before + 5, 60, "lobby to keep processing")
        assert sup.camera_stats("gate").reconnects >= 1

        rtsp_server.start()
        wait_for(lambda: sup.camera_stats("gate").state == CameraState.ONLINE, 60, "gate back online")
        gate_before = processed["gate"]
        wait_for(lambda: processed["gate"] >= gate_before + 3, 60, "frames after the reconnect")
        assert sup.camera_stats("gate").error is None
    finally:
        sup.stop()


def test_a_hung_server_is_detected_and_the_camera_recovers(rtsp_server: RtspServer, person_model: Path) -> None:
    """A server that keeps the connection but sends nothing (SIGSTOP) trips the read timeout."""
    sup, processed = _supervisor(
        f"""  - {{id: frozen, url: "{rtsp_server.url("cam360")}", detect_fps: 5, read_timeout_s: 2, open_timeout_s: 2,
       stall_timeout_s: 3, reconnect: {{initial_s: 0.3, max_s: 1}}}}""",
        person_model,
    )
    sup.start()
    pid = rtsp_server.pid
    assert pid is not None
    try:
        wait_for(lambda: processed["frozen"] >= 3, 120, "frames from the RTSP camera")
        os.kill(pid, signal.SIGSTOP)
        wait_for(lambda: sup.camera_stats("frozen").state != CameraState.ONLINE, 30, "the stall to be noticed")
        os.kill(pid, signal.SIGCONT)
        wait_for(lambda: sup.camera_stats("frozen").state == CameraState.ONLINE, 60, "recovery after the stall")
        before = processed["frozen"]
        wait_for(lambda: processed["frozen"] >= before + 3, 60, "frames after recovery")
    finally:
        os.kill(pid, signal.SIGCONT)
        sup.stop()
