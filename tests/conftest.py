"""Suite-wide fixtures: shared media and model, and real helper servers (RTSP cameras, Redis).

Helper servers are function-scoped because tests kill and restart them; each costs ~0.1 s to start. Their
processes are stopped by PID in teardown (see tests/support/processes.py).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from tests.support.processes import RedisServer, RtspServer, RtspServerFactory

REPO_ROOT = Path(__file__).resolve().parent.parent

# --doctest-modules imports every module under testpaths; this script imports PyGObject, which only Debian's
# interpreter has (it runs as a child process, see tests/support/processes.py).
collect_ignore = ["support/rtsp_server.py"]


# --- Shared data: ../shared beside the checkout (as CI lays it out), or $STREAMSRV_SHARED. -------------------------


def _existing(path: Path, what: str) -> Path:
    if not path.exists():
        pytest.fail(f"{what} not found at {path}; check out ../shared beside the repo or set STREAMSRV_SHARED")
    return path


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    return _existing(Path(os.environ.get("STREAMSRV_SHARED", REPO_ROOT.parent / "shared")).resolve(), "shared dir")


@pytest.fixture(scope="session")
def clip_360p(shared_dir: Path) -> Path:
    """640x360, 25 fps, 341 frames, H.264 without B-frames."""
    return _existing(shared_dir / "media" / "concourse_360p.mp4", "360p clip")


@pytest.fixture(scope="session")
def clip_720p(shared_dir: Path) -> Path:
    """1280x720, otherwise the same as clip_360p."""
    return _existing(shared_dir / "media" / "concourse_720p.mp4", "720p clip")


@pytest.fixture(scope="session")
def person_model(shared_dir: Path) -> Path:
    """Trained YOLOv8s person detector (classes 0 Normal, 1 Fall: both people)."""
    return _existing(shared_dir / "models" / "person_yolov8s.pt", "person model")


# --- Helper servers. -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rtsp_server_factory() -> Iterator[RtspServerFactory]:
    """The one way tests start GStreamer RTSP servers: ``factory(mounts={name: clip}, synthetic={name: "WxH@FPS"},
    port=None)`` starts one (a fresh port unless given) and returns it.

    Module-scoped so module-scoped servers (an app's cameras) can use it; every server still running when the
    module ends is stopped then, and a test may ``stop()`` its own sooner.
    """
    servers: list[RtspServer] = []

    def make(
        mounts: Mapping[str, Path] | None = None, synthetic: Mapping[str, str] | None = None, port: int | None = None
    ) -> RtspServer:
        server = RtspServer(mounts=mounts, synthetic=synthetic, port=port)
        servers.append(server)
        server.start()
        return server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def rtsp_server(rtsp_server_factory: RtspServerFactory, clip_360p: Path, clip_720p: Path) -> Iterator[RtspServer]:
    """Two looping cameras: `cam360` (640x360) and `cam720` (1280x720), both 25 fps; stopped after the test (tests
    kill and restart it)."""
    server = rtsp_server_factory(mounts={"cam360": clip_360p, "cam720": clip_720p})
    yield server
    server.stop()


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    yield server
    server.stop()
