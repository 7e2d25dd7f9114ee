"""MJPEG and snapshot.jpg from the real server (`streamsrv serve` as a child process) with two file cameras (the
360p clip, looping) and the real person model: annotated frames arrive, work happens only for watched cameras,
a stalled viewer holds up nobody, every frame is encoded once for all viewers, rule edits show at once, and the
API key works as ``?token=`` where a browser cannot send headers."""

from __future__ import annotations

import contextlib
import itertools
import socket
import struct
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import psutil
import pytest

from tests.support.app_server import AppServer, AppServers, model_section
from tests.support.waiting import wait_for

pytestmark = pytest.mark.slow

API_KEY = "preview-key-71c3"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
BOUNDARY = b"--streamsrv-frame"


@pytest.fixture(scope="module")
def server(module_app_factory: AppServers, clip_360p: Path, person_model: Path) -> AppServer:
    app = module_app_factory(
        model_section(person_model)
        + f"server: {{api_key: {API_KEY}}}\n"
        + "preview: {fps: 10, jpeg_quality: 70}\n"
        + "cameras:\n"
        + f"  - {{id: cam, url: '{clip_360p}', loop: true, detect_fps: 5,\n"
        + "      rules: {lines: [{name: mid, points: [[0, 0.55], [1, 0.55]], units: norm}]}}\n"
        + f"  - {{id: idle, url: '{clip_360p}', loop: true, detect_fps: 1}}\n"
        + f"  - {{id: spare, url: '{clip_360p}', enabled: false}}\n"
    )
    with app.client(API_KEY) as http:
        wait_for(lambda: http.get("/api/cameras/cam/stats").json()["frames_processed"] > 0, 60, "first results")
    return app


@pytest.fixture
def http(server: AppServer) -> Iterator[httpx.Client]:
    with server.client(API_KEY) as client:
        yield client


def preview_stats(http: httpx.Client) -> dict[str, Any]:
    response = http.get("/api/preview/stats")
    assert response.status_code == 200, response.text
    stats: dict[str, Any] = response.json()
    return stats


class Parts:
    """Reads the JPEG parts of a multipart/x-mixed-replace response, checking each part's headers.

    It holds on to the byte iterator: abandoning one closes the response, and the server would see a viewer leave.
    """

    def __init__(self, response: httpx.Response) -> None:
        self._chunks = response.iter_bytes()
        self._buf = b""

    def take(self, count: int) -> list[bytes]:
        parts: list[bytes] = []
        while len(parts) < count:
            part = self._next_part()
            if part is None:
                raise AssertionError(f"the stream ended after {len(parts)} of {count} parts")
            parts.append(part)
        return parts

    def rest(self) -> int:
        """Read to the end of the stream (the server ends it); the number of parts there were."""
        n = 0
        while self._next_part() is not None:
            n += 1
        return n

    def _next_part(self) -> bytes | None:
        while True:
            head_end = self._buf.find(b"\r\n\r\n")
            if head_end >= 0:
                head = self._buf[:head_end].decode()
                assert head.startswith(BOUNDARY.decode()), head
                assert "Content-Type: image/jpeg" in head
                length = int(head.split("Content-Length: ")[1].split("\r\n")[0])
                end = head_end + 4 + length + 2
                if len(self._buf) >= end:
                    part = self._buf[head_end + 4 : end - 2]
                    self._buf = self._buf[end:]
                    return part
            chunk = next(self._chunks, None)
            if chunk is None:
                return None
            self._buf += chunk


def decode(jpeg: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None, "not a JPEG"
    return image


def wait_idle(http: httpx.Client) -> None:
    wait_for(
        lambda: (
            preview_stats(http)
            == {"feeds": 0, "viewers": 0, "cameras": {}, "webrtc_peers": 0, "buffered_frames": 0, "buffered_bytes": 0}
        ),
        20,
        "the preview to stop once nobody watches",
    )


def test_mjpeg_streams_annotated_frames_only_while_watched(http: httpx.Client) -> None:
    wait_idle(http)
    with http.stream("GET", "/api/cameras/cam/mjpeg") as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "multipart/x-mixed-replace; boundary=streamsrv-frame"
        assert response.headers["cache-control"] == "no-store"
        parts = Parts(response)
        frames = [decode(p) for p in parts.take(4)]
        stats = preview_stats(http)
        costs = {c["camera_id"]: c["usage"] for c in http.get("/api/capacity").json()["cameras"]}
    assert all(f.shape == (360, 640, 3) for f in frames)
    assert any(not np.array_equal(a, b) for a, b in itertools.pairwise(frames)), "the picture moves"
    # The tripwire is drawn across the frame at 55 % of its height (yellow: high red and green, low blue).
    row = frames[-1][int(0.55 * 360)].astype(int)
    assert ((row[:, 2] > 180) & (row[:, 1] > 150) & (row[:, 0] < 90)).mean() > 0.5
    # Only the watched camera has a feed; the other two cost nothing.
    assert stats["feeds"] == 1 and list(stats["cameras"]) == ["cam"]
    assert stats["cameras"]["cam"]["viewers"] == {"mjpeg": 1}
    assert stats["cameras"]["cam"]["vp8_encodes"] == 0, "nothing is VP8-encoded without a WebRTC viewer"
    # Drawing and encoding cost CPU, counted as the watched camera's in the capacity model, and only its.
    assert stats["cameras"]["cam"]["encode_cores"] > 0 and costs["cam"]["preview_cores"] > 0
    assert all(usage["preview_cores"] == 0 for camera_id, usage in costs.items() if camera_id != "cam")
    # What the preview holds: the feed's latest frame, its pixels (360 x 640 x 3) and its JPEG.
    assert stats["buffered_frames"] == 1 and stats["buffered_bytes"] > 360 * 640 * 3
    wait_idle(http)


def test_a_stalled_viewer_holds_up_nobody_and_frames_are_encoded_once(server: AppServer, http: httpx.Client) -> None:
    wait_idle(http)
    # A client that asks for the stream and never reads it: its socket buffers fill up, then the server's.
    stalled = socket.socket()
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.connect(("127.0.0.1", server.port))
    stalled.sendall(
        f"GET /api/cameras/cam/mjpeg HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {API_KEY}\r\n\r\n".encode()
    )
    try:
        wait_for(lambda: preview_stats(http)["viewers"] == 1, 20, "the stalled viewer to be counted")
        got: dict[int, list[bytes]] = {}

        def read(i: int) -> None:
            with server.client(API_KEY) as own, own.stream("GET", "/api/cameras/cam/mjpeg") as response:
                parts = Parts(response)
                got[i] = parts.take(30)

        before = preview_stats(http)["cameras"]["cam"]["frames"]
        readers = [threading.Thread(target=read, args=(i,)) for i in range(3)]
        for t in readers:
            t.start()
        for t in readers:
            t.join(180)
        stats = preview_stats(http)["cameras"]["cam"]
        assert all(len(got[i]) == 30 for i in range(3)), "every reading viewer got its frames"
        assert stats["viewers"] == {"mjpeg": 1}, "only the stalled viewer is left"
        # (a viewer's first part may be the frame that was newest when it joined, made before ``before``)
        assert stats["frames"] - before >= 29, "the feed kept making frames"
        # One encoding per frame for every viewer (plus at most one made for a viewer that arrived between frames).
        assert stats["jpeg_encodes"] <= stats["frames"] + 1
    finally:
        stalled.close()
    wait_idle(http)


def test_clients_that_hang_up_at_once_leave_no_viewer_behind(server: AppServer, http: httpx.Client) -> None:
    """A page that switches cameras quickly drops its request before the stream's first byte."""
    wait_idle(http)
    request = f"GET /api/cameras/cam/mjpeg HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {API_KEY}\r\n\r\n"
    for hang_up in ("close", "reset") * 10:
        with socket.create_connection(("127.0.0.1", server.port)) as impatient:
            if hang_up == "reset":  # RST instead of FIN
                impatient.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            impatient.sendall(request.encode())
    wait_idle(http)


def test_snapshot_is_the_latest_annotated_frame(http: httpx.Client) -> None:
    response = http.get("/api/cameras/cam/snapshot.jpg")
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/jpeg"
    assert decode(response.content).shape == (360, 640, 3)
    assert preview_stats(http)["feeds"] == 0, "a snapshot of an unwatched camera starts no feed"

    missing = http.get("/api/cameras/nope/snapshot.jpg")
    assert missing.status_code == 404 and "nope" in missing.json()["detail"]
    disabled = http.get("/api/cameras/spare/snapshot.jpg")
    assert disabled.status_code == 503 and "no picture" in disabled.json()["detail"]
    assert http.get("/api/cameras/nope/mjpeg").status_code == 404


def test_api_key_as_bearer_or_token_query(server: AppServer) -> None:
    with server.client() as anonymous:
        assert anonymous.get("/api/cameras/cam/snapshot.jpg").status_code == 401
        assert anonymous.get("/api/cameras/cam/snapshot.jpg", params={"token": "wrong"}).status_code == 401
        assert anonymous.get("/api/cameras/cam/snapshot.jpg", params={"token": API_KEY}).status_code == 200
        with anonymous.stream("GET", "/api/cameras/cam/mjpeg", params={"token": API_KEY}) as response:
            assert response.status_code == 200
            parts = Parts(response)
            assert len(parts.take(1)) == 1
        page = anonymous.get("/")
        assert page.status_code == 200 and "streamsrv" in page.text, "the page itself needs no key"
        assert anonymous.get("/static/app.js").status_code == 200


def test_rule_edits_show_in_the_next_frame(http: httpx.Client) -> None:
    def blue_cast() -> float:
        image = decode(http.get("/api/cameras/idle/snapshot.jpg").content).astype(float)
        left = image[60:300, 20:300]
        return float((left[..., 0] - left[..., 2]).mean())

    assert abs(blue_cast()) < 8, "the concourse floor is grey"
    zone = {"name": "left", "polygon": [[0.02, 0.15], [0.5, 0.15], [0.5, 0.85], [0.02, 0.85]], "units": "norm"}
    response = http.put("/api/cameras/idle/rules", json={"zones": [zone], "lines": []})
    assert response.status_code == 200, response.text
    assert blue_cast() > 15, "the new zone is drawn, tinted, in the very next frame"


def test_removing_a_camera_ends_its_stream(http: httpx.Client) -> None:
    with http.stream("GET", "/api/cameras/idle/mjpeg") as response:
        parts = Parts(response)
        parts.take(1)
        assert http.delete("/api/cameras/idle").status_code == 204
        assert parts.rest() <= 20  # returns once the server ends the response
    wait_idle(http)


def thread_niceness(pid: int) -> list[int]:
    """The niceness of each thread of process ``pid`` (field 19 of /proc/PID/task/TID/stat)."""
    out = []
    for stat in Path(f"/proc/{pid}/task").glob("*/stat"):
        with contextlib.suppress(FileNotFoundError):  # a thread that ended meanwhile
            out.append(int(stat.read_text().rpartition(")")[2].split()[16]))
    return out


def test_the_preview_thread_yields_the_cpu_and_the_server_does_not(server: AppServer, http: httpx.Client) -> None:
    wait_idle(http)
    assert server.pid is not None
    base = psutil.Process(server.pid).nice()
    assert all(n == base for n in thread_niceness(server.pid)), "nothing runs at a lower priority while idle"
    lowered = min(19, base + 10)
    with http.stream("GET", "/api/cameras/cam/mjpeg") as response:
        parts = Parts(response)
        parts.take(2)
        # preview.niceness (10): the camera's one feed thread draws and encodes; the API threads keep their priority
        wait_for(lambda: lowered in thread_niceness(server.pid), 10, "the feed thread at a lower priority")
        niceness = thread_niceness(server.pid)
        parts.take(1)
    assert niceness.count(lowered) == 1, niceness
    assert niceness.count(base) == len(niceness) - 1, niceness
    wait_idle(http)
