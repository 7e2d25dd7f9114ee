"""What a source may read: API cameras only files inside ``server.allowed_file_dirs``; every source only the FFmpeg
protocols of its scheme, so a playlist or a ``concat:``/``subfile:`` path cannot reach local files or other
protocols. (That such a camera goes to ``error`` while the others run is in tests/test_faults_sources.py.)"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import av
import pytest
from pydantic import ValidationError

from streamsrv.config import AppConfig, CameraConfig
from streamsrv.config.file_access import check_file_access, local_path
from streamsrv.decode.source import VideoSource
from streamsrv.errors import NotFoundError, SourceError, SourceUnavailable
from streamsrv.runtime.registry import CameraRegistry
from streamsrv.runtime.server import StreamServer
from tests.support.fake_cameras import HlsCamera


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    """An allowed directory holding a clip, and a private one beside it."""
    allowed, private = tmp_path / "clips", tmp_path / "private"
    allowed.mkdir()
    private.mkdir()
    (allowed / "a.mp4").write_bytes(b"")
    (private / "key.pem").write_text("secret")
    return allowed, private


def test_network_streams_and_capture_devices_are_not_files() -> None:
    for url in ("rtsp://cam/1", "https://cam/x.m3u8", "/dev/video0", "/dev/video12"):
        assert local_path(url) is None
    assert local_path("/dev/video0/../../etc/passwd") == "/dev/video0/../../etc/passwd"
    assert local_path("file:///etc/passwd") == "/etc/passwd"
    assert local_path("concat:/etc/passwd|/etc/hosts") == "concat:/etc/passwd|/etc/hosts"


def test_no_file_is_allowed_by_default(tmp_path: Path) -> None:
    for url in ("file:///etc/passwd", "/etc/passwd", "clip.mp4", "concat:/etc/passwd|/etc/hosts"):
        with pytest.raises(ValueError, match=r"server\.allowed_file_dirs"):
            check_file_access(url, [], tmp_path)
    check_file_access("rtsp://cam/1", [], tmp_path)


def test_files_inside_the_allowed_directories_only(dirs: tuple[Path, Path]) -> None:
    allowed, private = dirs
    (allowed / "link.mp4").symlink_to(private / "key.pem")
    (allowed / "sub").symlink_to(private)
    base = allowed.parent
    check_file_access(str(allowed / "a.mp4"), [str(allowed)], base)
    check_file_access(f"file://{allowed}/a.mp4", [str(allowed)], base)
    check_file_access("clips/a.mp4", ["clips"], base)  # both relative to the config's directory
    for url in (
        str(private / "key.pem"),
        f"file://{private}/key.pem",
        f"{allowed}/../private/key.pem",
        str(allowed / "link.mp4"),  # a symlink out
        str(allowed / "sub" / "key.pem"),  # through a symlinked directory
        "/dev/video0/../../etc/passwd",
        "/etc/passwd",
    ):
        with pytest.raises(ValueError, match=r"outside\ server\.allowed_file_dirs"):
            check_file_access(url, [str(allowed)], base)


class FakeServer:
    """The StreamServer calls the registry makes, on a config alone."""

    def __init__(self, cfg: AppConfig) -> None:
        self.cfg = cfg

    def camera_config(self, camera_id: str) -> CameraConfig:
        for cam in self.cfg.cameras:
            if cam.id == camera_id:
                return cam
        raise NotFoundError(camera_id)

    def add_camera(self, cam: CameraConfig) -> None:
        self.cfg.cameras = [*self.cfg.cameras, cam]

    def replace_camera(self, cam: CameraConfig) -> None:
        self.cfg.cameras = [c for c in self.cfg.cameras if c.id != cam.id] + [cam]


def registry(allowed: list[str], cameras: list[dict[str, Any]], base: Path) -> CameraRegistry:
    cfg = AppConfig.model_validate({"server": {"allowed_file_dirs": allowed}, "cameras": cameras})
    cfg.base_dir = base
    return CameraRegistry(cast(StreamServer, FakeServer(cfg)))


def url_error(exc: pytest.ExceptionInfo[ValidationError]) -> str:
    (error,) = exc.value.errors()
    assert error["loc"] == ("url",)
    return str(error["msg"])


def test_api_cameras_read_only_allowed_files(dirs: tuple[Path, Path]) -> None:
    allowed, private = dirs
    reg = registry([str(allowed)], [], allowed.parent)
    for url in ("file:///etc/passwd", "/etc/passwd", str(private / "key.pem"), "private/key.pem"):
        with pytest.raises(ValidationError) as exc:
            reg.add(CameraConfig(id="x", url=url))
        assert "server.allowed_file_dirs" in url_error(exc)
    assert reg.add(CameraConfig(id="ok", url="clips/a.mp4")).url == str(allowed / "a.mp4")
    assert reg.add(CameraConfig(id="cam", url="rtsp://cam/1")).url == "rtsp://cam/1"
    with pytest.raises(ValidationError) as exc:
        reg.replace(CameraConfig(id="cam", url=str(private / "key.pem")))
    assert "server.allowed_file_dirs" in url_error(exc)
    with pytest.raises(ValidationError):
        reg.update("cam", {"url": "/etc/passwd"})
    assert reg.get("cam").url == "rtsp://cam/1"


def test_the_config_file_may_point_anywhere_and_the_api_may_change_other_fields(dirs: tuple[Path, Path]) -> None:
    allowed, private = dirs
    reg = registry([], [{"id": "ops", "url": str(private / "key.pem"), "enabled": False}], allowed.parent)
    assert reg.update("ops", {"detect_fps": 2.0}).detect_fps == 2.0
    assert reg.replace(reg.get("ops").model_copy(update={"name": "Ops"})).name == "Ops"
    with pytest.raises(ValidationError):
        reg.update("ops", {"url": str(allowed / "a.mp4")})  # a new file URL is checked, nothing allowed here


# --- FFmpeg's protocols ---------------------------------------------------------------------------------------------


@pytest.fixture
def hls(tmp_path: Path, clip_360p: Path) -> Iterator[HlsCamera]:
    camera = HlsCamera(tmp_path / "www", clip_360p)
    yield camera
    camera.close()


def open_source(url: str) -> None:
    src = VideoSource(CameraConfig(id="c", url=url, open_timeout_s=5, read_timeout_s=5), realtime=False)
    try:
        src.open()
    finally:
        src.close()


def test_an_http_playlist_cannot_make_the_server_read_a_local_file(hls: HlsCamera, tmp_path: Path) -> None:
    local = tmp_path / "local.ts"
    local.write_bytes(hls.segment.read_bytes())
    open_source(hls.playlist("good.m3u8", "seg.ts"))  # the same playlist with its segment served over HTTP plays

    # FFmpeg refuses the segment ("Protocol 'file' not on whitelist"), so the playlist has nothing to play
    with pytest.raises(SourceUnavailable, match=r"sneaky\.m3u8:\ not\ a\ readable\ video\ stream"):
        open_source(hls.playlist("sneaky.m3u8", f"file://{local}"))


@pytest.mark.parametrize("trick", ["concat:{clip}|{clip}", "subfile,,start,0,end,0,,:{clip}", "file://concat:{clip}"])
def test_protocols_in_a_file_path_are_not_followed(clip_360p: Path, trick: str) -> None:
    url = trick.format(clip=clip_360p)
    with av.open(url.removeprefix("file://")) as container:  # what FFmpeg would do with it unguarded
        assert container.streams.video

    with pytest.raises(SourceUnavailable, match="not found"):
        open_source(url)


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("rtsp://cam/1", {"rtsp", "rtp", "srtp", "udp", "tcp"}),
        ("rtsps://cam/1", {"rtsp", "rtsps", "rtp", "srtp", "udp", "tcp", "tls"}),
        ("http://cam/x.m3u8", {"http", "https", "tcp", "tls", "crypto", "httpproxy"}),
        ("file:///srv/a.mp4", {"file"}),
        ("clip.mp4", {"file"}),
    ],
)
def test_every_source_is_opened_with_the_protocols_of_its_scheme_only(
    monkeypatch: pytest.MonkeyPatch, url: str, allowed: set[str]
) -> None:
    # FFmpeg 8 already keeps an HLS playlist's segments to its own kind of protocol; the whitelist holds for
    # every demuxer and every FFmpeg build PyAV may bring.
    opened: list[dict[str, str]] = []

    def spy(target: str, options: dict[str, str], **kwargs: Any) -> None:
        opened.append(options)
        raise av.error.FileNotFoundError(2, "spy", target)

    monkeypatch.setattr(av, "open", spy)
    with pytest.raises(SourceError):
        open_source(url)
    assert set(opened[0]["protocol_whitelist"].split(",")) == allowed
