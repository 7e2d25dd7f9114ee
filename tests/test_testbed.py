"""The test bed itself: real RTSP cameras and Redis behave as the rest of the suite relies on."""

from __future__ import annotations

import contextlib
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import av
import av.error
import pytest
import redis

from tests.support.processes import ManagedProcess, RedisServer, RtspServer, RtspServerFactory, free_port, port_open

# Timeout in microseconds; it bounds the open and every read, so a dead server cannot hang a test.
RTSP_OPTIONS = {"rtsp_transport": "tcp", "timeout": "3000000"}


def read_frame_sizes(url: str, count: int) -> list[tuple[int, int]]:
    with av.open(url, options=RTSP_OPTIONS) as container:
        sizes = []
        for frame in container.decode(video=0):
            sizes.append((frame.width, frame.height))
            if len(sizes) == count:
                break
    return sizes


@pytest.mark.rtsp
@pytest.mark.parametrize(("mount", "size"), [("cam360", (640, 360)), ("cam720", (1280, 720))])
def test_rtsp_mount_serves_clip_frames(rtsp_server: RtspServer, mount: str, size: tuple[int, int]) -> None:
    assert read_frame_sizes(rtsp_server.url(mount), 20) == [size] * 20


@pytest.mark.rtsp
def test_rtsp_concurrent_readers_all_get_frames(rtsp_server: RtspServer) -> None:
    urls = [rtsp_server.url("cam360"), rtsp_server.url("cam360"), rtsp_server.url("cam720")]
    with ThreadPoolExecutor(len(urls)) as pool:
        results = list(pool.map(read_frame_sizes, urls, [20] * len(urls)))
    assert results == [[(640, 360)] * 20, [(640, 360)] * 20, [(1280, 720)] * 20]


@pytest.mark.rtsp
def test_rtsp_kill_drops_readers_and_restart_serves_again(rtsp_server: RtspServer) -> None:
    url = rtsp_server.url("cam360")
    with av.open(url, options=RTSP_OPTIONS) as container:
        frames = container.decode(video=0)
        for _ in range(5):
            next(frames)
        rtsp_server.kill()
        # A killed server ends a live stream: the iterator runs out (or errors) after at most the queued frames.
        started = time.monotonic()
        with contextlib.suppress(av.error.FFmpegError):
            for _ in frames:
                pass
        assert time.monotonic() - started < 2.5

    with pytest.raises(av.error.ConnectionRefusedError):
        av.open(url, options=RTSP_OPTIONS)

    rtsp_server.start()
    assert len(read_frame_sizes(url, 20)) == 20


@pytest.mark.rtsp
def test_rtsp_synthetic_mount(rtsp_server_factory: RtspServerFactory) -> None:
    server = rtsp_server_factory(synthetic={"pattern": "320x240@15"})
    assert read_frame_sizes(server.url("pattern"), 5) == [(320, 240)] * 5


def test_redis_kill_and_restart_on_same_port(redis_server: RedisServer) -> None:
    client = redis.Redis.from_url(redis_server.url, socket_timeout=2)
    assert client.ping()
    redis_server.kill()
    with pytest.raises(redis.ConnectionError):
        client.ping()
    redis_server.start()
    # The same client reconnects by itself once the server is back.
    assert client.ping()


def test_managed_process_waits_for_port_and_restarts_on_it() -> None:
    port = free_port()
    process = ManagedProcess([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"], ready_port=port)
    with process:
        assert port_open(port)
        first_pid = process.pid
        process.restart()
        assert port_open(port)
        assert process.pid != first_pid
    assert not process.running
    assert not port_open(port)


def test_shared_data_is_present(clip_360p: Path, clip_720p: Path, person_model: Path) -> None:
    assert clip_360p.stat().st_size > 0
    assert clip_720p.stat().st_size > 0
    assert person_model.stat().st_size > 1_000_000
