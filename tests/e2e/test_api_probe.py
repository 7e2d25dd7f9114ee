"""``POST /api/probe`` against real sources: an RTSP camera, files, and servers that refuse, hang or want a login."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.app_server import AppServer, AppServers, model_section
from tests.support.fake_cameras import LoginCamera
from tests.support.processes import RtspServer, RtspServerFactory, free_port

pytestmark = pytest.mark.rtsp


@pytest.fixture(scope="module")
def rtsp(rtsp_server_factory: RtspServerFactory, clip_360p: Path) -> RtspServer:
    return rtsp_server_factory(mounts={"cam360": clip_360p})


@pytest.fixture(scope="module")
def app(
    module_app_factory: AppServers, person_model: Path, clip_720p: Path, tmp_path_factory: pytest.TempPathFactory
) -> AppServer:
    # Probes read server files only inside server.allowed_file_dirs: here the clips' and the tests' own directories.
    allowed = [str(clip_720p.parent), str(tmp_path_factory.getbasetemp())]
    return module_app_factory(model_section(person_model) + f"server: {{allowed_file_dirs: {allowed}}}\n", ready=False)


@pytest.fixture
def http(app: AppServer) -> Iterator[httpx.Client]:
    # the probe's own bound (timeout_s + 1 s) must answer well within this
    with app.client(timeout_s=20) as client:
        yield client


@pytest.fixture
def login_server() -> Iterator[str]:
    """An HTTP camera that wants credentials."""
    camera = LoginCamera()
    yield camera.url
    camera.close()


@pytest.fixture
def silent_server() -> Iterator[str]:
    """Accepts TCP connections (the kernel completes them from the backlog) and never says a word."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield f"rtsp://127.0.0.1:{sock.getsockname()[1]}/stream"


def probe(http: httpx.Client, url: str, **options: Any) -> dict[str, Any]:
    response = http.post("/api/probe", json={"url": url, **options})
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def test_rtsp_camera(http: httpx.Client, rtsp: RtspServer) -> None:
    url = f"rtsp://admin:hunter2@127.0.0.1:{rtsp.port}/cam360"

    result = probe(http, url)

    assert result["ok"] is True, result
    assert (result["codec"], result["width"], result["height"], result["fps"]) == ("h264", 640, 360, 25.0)
    assert result["url"] == f"rtsp://admin:***@127.0.0.1:{rtsp.port}/cam360"
    assert "hunter2" not in str(result)


def test_video_file(http: httpx.Client, clip_720p: Path) -> None:
    result = probe(http, str(clip_720p))

    assert result["ok"] is True, result
    assert (result["codec"], result["width"], result["height"], result["fps"]) == ("h264", 1280, 720, 25.0)


def test_files_outside_the_allowed_directories_are_refused(http: httpx.Client, clip_720p: Path) -> None:
    for url in ("/etc/passwd", "file:///etc/passwd", "../../../../../../../../../etc/passwd"):
        response = http.post("/api/probe", json={"url": url})
        assert response.status_code == 422, response.text
        (error,) = response.json()["detail"]
        assert error["loc"] == ["body", "url"] and "server.allowed_file_dirs" in error["msg"], error
    # a path is a path: FFmpeg never reads it as its concat protocol
    assert probe(http, f"concat:{clip_720p}|{clip_720p}")["reason"] == "not_found"


def test_refused_port(http: httpx.Client) -> None:
    result = probe(http, f"rtsp://user:secret@127.0.0.1:{free_port()}/stream")

    assert (result["ok"], result["reason"]) == (False, "refused")
    assert result["error"].endswith("connection refused")
    assert "secret" not in str(result)


def test_unknown_rtsp_path(http: httpx.Client, rtsp: RtspServer) -> None:
    result = probe(http, rtsp.url("no-such-camera"))

    assert (result["ok"], result["reason"]) == (False, "not_found")


def test_missing_file(http: httpx.Client, tmp_path: Path) -> None:
    assert probe(http, str(tmp_path / "missing.mp4"))["reason"] == "not_found"


def test_file_that_is_not_video(http: httpx.Client, tmp_path: Path) -> None:
    text = tmp_path / "notes.mp4"
    text.write_text("these are not the frames you are looking for\n" * 100)

    result = probe(http, str(text))

    assert (result["ok"], result["reason"]) == (False, "not_video")


def test_audio_only_file_is_not_video(http: httpx.Client, tmp_path: Path) -> None:
    audio = tmp_path / "tone.wav"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "sine=duration=0.5", str(audio)], check=True, timeout=30
    )

    result = probe(http, str(audio))

    assert (result["ok"], result["reason"]) == (False, "not_video")
    assert "no video stream" in result["error"]


def test_camera_that_wants_a_login(http: httpx.Client, login_server: str) -> None:
    result = probe(http, login_server)

    assert (result["ok"], result["reason"]) == (False, "unauthorized")


def test_server_that_never_answers_times_out(http: httpx.Client, silent_server: str) -> None:
    result = probe(http, silent_server, timeout_s=1)

    assert (result["ok"], result["reason"]) == (False, "timeout")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"url": "ftp://cam/1"}, "url"),
        ({"url": ""}, "url"),
        ({"url": "rtsp://cam/1", "timeout_s": 0}, "timeout_s"),
        ({"url": "rtsp://cam/1", "timeout_s": 600}, "timeout_s"),
        ({"url": "rtsp://cam/1", "transport": "tcp"}, "transport"),
        ({}, "url"),
    ],
)
def test_bad_probe_request_names_the_field(http: httpx.Client, body: dict[str, Any], field: str) -> None:
    response = http.post("/api/probe", json=body)

    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", field]
