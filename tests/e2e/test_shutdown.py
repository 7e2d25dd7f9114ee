"""Graceful shutdown of ``streamsrv serve`` on SIGTERM: with events still buffered for a Redis that is down, and
with clients on the endless responses (the SSE event stream, MJPEG).

The server exits with status 0; its decoder, inference and helper processes are gone; events it buffered during
the outage reach Redis while it shuts down (each camera's seq 1, 2, 3, ... exactly once, in order); its frame
rings and the POSIX semaphores its processes had mapped are gone from /dev/shm. Open streams end with a complete
body at once, instead of holding shutdown until uvicorn's graceful timeout cancels them.
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from pathlib import Path

import httpx
import psutil
import pytest
import redis

from streamsrv.events import Event
from tests.support.app_server import AppServers, model_section
from tests.support.processes import RedisServer, RtspServerFactory
from tests.support.waiting import wait_for

pytestmark = pytest.mark.slow

SHM = Path("/dev/shm")
# cli.py's timeout_graceful_shutdown: past it uvicorn cancels whatever is still responding.
GRACEFUL_TIMEOUT_S = 5.0


def buffered(http: httpx.Client) -> int:
    match = re.search(r"^streamsrv_event_bus_buffered (\S+)$", http.get("/metrics").text, re.MULTILINE)
    assert match, "streamsrv_event_bus_buffered is exported"
    return int(float(match.group(1)))


def redis_events(url: str) -> list[Event]:
    """The whole event stream in Redis, oldest first."""
    with redis.Redis.from_url(url, socket_timeout=5) as client:
        return [Event.from_json(fields[b"event"]) for _, fields in client.xrange("streamsrv:events")]


def mapped_semaphores(pids: set[int]) -> set[str]:
    """POSIX semaphores (/dev/shm/sem.*) the processes have mapped."""
    found: set[str] = set()
    for pid in pids:
        try:
            found |= {m.path for m in psutil.Process(pid).memory_maps() if m.path.startswith(str(SHM / "sem."))}
        except psutil.NoSuchProcess:
            continue
    return found


@pytest.mark.rtsp
def test_sigterm_stops_everything_flushes_buffered_events_and_frees_shared_memory(
    app_factory: AppServers,
    person_model: Path,
    clip_360p: Path,
    redis_server: RedisServer,
    rtsp_server_factory: RtspServerFactory,
) -> None:
    rtsp = rtsp_server_factory(mounts={"door": clip_360p})
    # No rules: the only events are the camera's online/offline ones, which this test causes one by one.
    app = app_factory(
        model_section(person_model)
        + f"""events: {{redis_url: "{redis_server.url}"}}
cameras:
  - id: door
    url: {rtsp.url("door")}
    detect_fps: 2
    open_timeout_s: 2
    read_timeout_s: 2
    reconnect: {{initial_s: 0.2, max_s: 1}}
"""
    )
    with app.client() as http:

        def state() -> str:
            return str(http.get("/api/cameras/door/stats").json()["state"])

        wait_for(lambda: bool(redis_events(redis_server.url)), 60, "camera.online in Redis", app)
        (online,) = redis_events(redis_server.url)
        assert online.type == "camera.online"

        # Redis goes away; the camera drops and comes back: its offline/online events wait in the buffer.
        redis_server.kill()
        rtsp.kill()
        wait_for(lambda: state() == "reconnecting", 30, "door reconnecting", app)
        rtsp.start()
        wait_for(lambda: state() == "online", 60, "door online again", app)
        wait_for(lambda: buffered(http) == 2, 30, "the two events to be buffered", app)
    server_pid = app.pid
    assert server_pid is not None
    children = [psutil.Process(pid) for pid in app.child_pids()]
    assert len(children) >= 3, "a decoder, the inference process and multiprocessing's resource tracker"
    semaphores = mapped_semaphores({server_pid} | {p.pid for p in children})
    assert semaphores, "the frame-ready semaphore at least"
    assert list(SHM.glob(f"streamsrv-{server_pid}-*"))

    os.kill(server_pid, signal.SIGTERM)
    redis_server.start()  # back while the server shuts down: the buffer must be delivered, not dropped
    assert app._proc is not None
    exit_code = app._proc.wait(60)

    log = app.log()
    assert exit_code == 0, log[-3000:]
    assert "Application shutdown complete" in log
    _, alive = psutil.wait_procs(children, timeout=10)
    assert not alive, f"child processes outlived the server: {alive}"
    assert not list(SHM.glob(f"streamsrv-{server_pid}-*")), "frame rings left in /dev/shm"
    assert not [s for s in semaphores if Path(s).exists()], "semaphores left in /dev/shm"
    assert "leaked" not in log and "not delivered" not in log, log[-3000:]

    # The restarted Redis (no persistence) holds exactly what was buffered: the next two of the camera's seqs.
    delivered = redis_events(redis_server.url)
    assert [(e.type, e.run_id, e.seq) for e in delivered] == [
        ("camera.offline", online.run_id, online.seq + 1),
        ("camera.online", online.run_id, online.seq + 2),
    ]


class StreamReader:
    """Reads one endless response in a thread, to see how it ends: a complete body, or a transport error."""

    def __init__(self, base_url: str, path: str) -> None:
        self.path = path
        self.opened = threading.Event()
        self.error: Exception | None = None
        self.ended_at: float | None = None  # time.monotonic()
        self._thread = threading.Thread(target=self._read, args=(base_url,), name=f"read {path}", daemon=True)
        self._thread.start()

    def _read(self, base_url: str) -> None:
        try:
            with httpx.Client(base_url=base_url, timeout=30) as http, http.stream("GET", self.path) as response:
                assert response.status_code == 200, response.status_code
                for _ in response.iter_raw():
                    self.opened.set()
        except Exception as exc:  # a truncated chunked body (RemoteProtocolError) is what this test looks for
            self.error = exc
        finally:
            self.ended_at = time.monotonic()

    def ended(self, timeout_s: float) -> bool:
        self._thread.join(timeout_s)
        return not self._thread.is_alive()


def test_sigterm_ends_open_event_and_mjpeg_streams_cleanly_and_promptly(
    app_factory: AppServers, person_model: Path, clip_360p: Path
) -> None:
    app = app_factory(
        model_section(person_model)
        + f"""cameras:
  - {{id: lobby, url: "{clip_360p}", loop: true, detect_fps: 2}}
"""
    )
    readers = [StreamReader(app.base_url, p) for p in ("/api/events/stream", "/api/cameras/lobby/mjpeg")]
    for reader in readers:
        assert reader.opened.wait(60), f"{reader.path} sent nothing: {reader.error!r}\n{app.output()}"
    assert app.pid is not None and app._proc is not None
    signalled = time.monotonic()
    os.kill(app.pid, signal.SIGTERM)
    exit_code = app._proc.wait(60)
    for reader in readers:
        assert reader.ended(10), f"{reader.path} still open after the server exited"

    log = app.log()
    assert exit_code == 0, log[-3000:]
    assert "Traceback" not in log, log[-5000:]
    assert "timeout graceful shutdown exceeded" not in log, log[-3000:]
    for reader in readers:
        assert reader.error is None, f"{reader.path} did not end cleanly: {reader.error!r}"
        assert reader.ended_at is not None
        # Well inside uvicorn's grace period: the stream ended itself rather than being waited out.
        assert reader.ended_at - signalled < GRACEFUL_TIMEOUT_S / 2, f"{reader.path} ended late"
