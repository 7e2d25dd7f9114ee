"""The preview hub: one annotate-and-encode loop per *watched* camera, shared by all of its viewers.

A viewer (an MJPEG response, a WebRTC track) takes a ``Viewer`` lease on a camera. The first lease starts the
camera's feed thread; it wakes at ``preview.fps``, and when the pipeline has a new result it reads the frame that
result was computed on (so boxes sit on the people they belong to), draws the overlay and keeps it as the camera's
latest ``PreviewFrame``. The last lease to close stops the thread: a camera nobody watches costs nothing.

A viewer may ask for optional layers (``LAYERS``: ``motion``, the motion gate's moving regions). Viewers of one camera
with the same layers share a feed; other layers make a feed of their own, drawn and encoded separately.

Viewers never wait for each other or hold up the feed. An MJPEG viewer pulls the newest frame when it is ready for
one (latest-frame-wins), so a slow one skips frames. A frame is JPEG-encoded once for all MJPEG viewers, and
VP8-encoded once for all WebRTC viewers (``streamsrv.preview.vp8``), each only when such viewers exist. VP8
frames depend on the ones before, so a WebRTC viewer gets every encoded frame in order from a short queue; one
that falls that far behind drops its queue and starts again at the next keyframe.

Example:
    >>> hub = PreviewHub(server, cfg.preview)  # doctest: +SKIP
    >>> viewer = hub.watch("door", "mjpeg")  # in the event loop  # doctest: +SKIP
    >>> frame = await viewer.next_frame(); viewer.close()  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections import Counter, deque
from typing import Literal

from streamsrv.config.preview import PreviewConfig
from streamsrv.errors import NotFoundError
from streamsrv.preview.frame import EncodeCounts, PreviewFrame
from streamsrv.preview.render import LAYERS, FrameRenderer, Layer, Layers
from streamsrv.preview.stats import CameraPreviewStats, PreviewStats
from streamsrv.preview.vp8 import VIDEO_CLOCK_HZ, Vp8Stream
from streamsrv.runtime.protocol import ServerApi
from streamsrv.runtime.stats import RateMeter

log = logging.getLogger(__name__)
ViewerKind = Literal["mjpeg", "webrtc"]
WEBRTC_BACKLOG_FRAMES = 20  # encoded frames a WebRTC viewer may fall behind before it skips to a keyframe
_JOIN_TIMEOUT_S = 2.0


def yield_cpu(niceness: int) -> None:
    """Lower the calling thread's CPU priority by ``niceness``; the rest of the process keeps its own.

    The model's threads meet at a barrier after every layer, so an encoder that preempts one of them stalls all
    of them; at a lower priority it runs in the gaps they leave. (On Linux a thread id names just that thread.)
    """
    tid = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + niceness))
    except OSError as exc:  # not Linux, or a sandbox that forbids it: the preview then runs at normal priority
        log.debug("cannot lower the preview thread's priority: %s", exc)


class Viewer:
    """A lease on one camera's preview; ``close`` it when the viewer goes (the feed stops with its last viewer).

    MJPEG viewers get the newest frame each time; WebRTC viewers get every VP8-encoded frame in order, starting
    at a keyframe.
    """

    def __init__(self, hub: PreviewHub, feed: _Feed, kind: ViewerKind, loop: asyncio.AbstractEventLoop) -> None:
        self.camera_id = feed.camera_id
        self.layers = feed.layers
        self.kind: ViewerKind = kind
        self._hub, self._feed, self._loop = hub, feed, loop
        self._wakeup = asyncio.Event()
        self._seen = -1
        self._queue: deque[PreviewFrame] = deque()  # WebRTC: encoded frames not sent yet
        self._awaiting_keyframe = True
        self.closed = False

    async def next_frame(self) -> PreviewFrame | None:
        """The next frame for this viewer, waiting for one; None once the camera or the viewer is gone."""
        while True:
            self._wakeup.clear()  # before looking, so a frame published meanwhile still wakes us
            if self.closed or self._feed.gone:
                return None
            if self.kind == "webrtc":
                if self._queue:
                    return self._queue.popleft()
            else:
                frame = self._feed.latest
                if frame is not None and frame.seq != self._seen:
                    self._seen = frame.seq
                    return frame
            await self._wakeup.wait()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._hub._release(self)
            self._wakeup.set()

    def _wake(self, frame: PreviewFrame | None) -> None:
        """From the feed thread: a new frame (or None: the feed ended)."""
        with contextlib.suppress(RuntimeError):  # the viewer's loop has closed: nobody is waiting any more
            if self.kind == "webrtc" and frame is not None:
                self._loop.call_soon_threadsafe(self._enqueue, frame)
            else:
                self._loop.call_soon_threadsafe(self._wakeup.set)

    def _enqueue(self, frame: PreviewFrame) -> None:
        """In the viewer's event loop."""
        encoded = frame.vp8
        if encoded is None or (self._awaiting_keyframe and not encoded.keyframe):
            return  # a decoder can only start at a keyframe
        if len(self._queue) >= WEBRTC_BACKLOG_FRAMES:
            # So far behind that catching up would only add delay: start again at a fresh keyframe.
            self._queue.clear()
            self._awaiting_keyframe = True
            self._feed.request_keyframe()
            return
        self._awaiting_keyframe = False
        self._queue.append(frame)
        self._wakeup.set()


class _Feed:
    """The annotate loop of one watched camera, on its own thread."""

    def __init__(self, hub: PreviewHub, camera_id: str, layers: Layers = frozenset()) -> None:
        self.hub, self.camera_id, self.layers = hub, camera_id, layers
        self.viewers: set[Viewer] = set()
        self.latest: PreviewFrame | None = None
        self.gone = False  # the camera was removed
        self.frames = 0
        self.counts = EncodeCounts()
        self.cpu_s, self.cpu = 0.0, RateMeter()  # its thread's CPU time (drawing, encoding), and its rate in cores
        self._renderer = FrameRenderer(hub.server, hub.cfg, camera_id, self.counts, layers)
        self._vp8: Vp8Stream | None = None
        self._keyframe_wanted = False
        self._t0 = time.monotonic()
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"streamsrv-preview-{camera_id}", daemon=True)

    def kinds(self) -> Counter[str]:
        with self.hub._lock:
            return Counter(v.kind for v in self.viewers)

    def stop(self) -> None:
        self._stop.set()

    def request_keyframe(self) -> None:
        """The next VP8 frame is to be a keyframe (a WebRTC viewer joined or fell behind); from any thread.

        The current picture is drawn again for it, so a viewer of a still picture (a stalled camera) sees it too.
        """
        self._keyframe_wanted = True
        self._renderer.invalidate()

    def _run(self) -> None:
        yield_cpu(self.hub.cfg.niceness)
        interval = 1.0 / self.hub.cfg.fps
        due = time.monotonic()
        failures = 0
        while not self._stop.is_set():
            try:
                started = time.thread_time()
                self._tick()
                self.cpu_s += time.thread_time() - started
                self.cpu.sample(self.cpu_s)
                failures = 0
            except NotFoundError:
                log.info("camera %s was removed; closing its preview", self.camera_id)
                self.gone = True
                self._notify(None)
                return
            except Exception:
                failures += 1
                if failures == 1 or failures % 100 == 0:  # rate-limited: one bad frame must not flood the log
                    log.exception("camera %s: preview frame failed (%d in a row)", self.camera_id, failures)
            due = max(due + interval, time.monotonic())
            self._stop.wait(due - time.monotonic())

    def _tick(self) -> None:
        frame = self._renderer.render(self.frames + 1)
        if frame is None:
            return
        kinds = self.kinds()
        if kinds["mjpeg"]:
            frame.jpeg()
        if kinds["webrtc"]:
            if self._vp8 is None:
                self._vp8 = Vp8Stream(self.hub.cfg.webrtc_bitrate_kbps * 1000)
            if self._keyframe_wanted:
                self._keyframe_wanted = False
                self._vp8.request_keyframe()
            frame.vp8 = self._vp8.encode(frame.i420(), int((time.monotonic() - self._t0) * VIDEO_CLOCK_HZ))
            self.counts.add(vp8=1)
        else:
            self._vp8 = None  # the next WebRTC viewer starts a new stream
        self.latest = frame
        self.frames += 1
        self._notify(frame)

    def _notify(self, frame: PreviewFrame | None) -> None:
        with self.hub._lock:
            viewers = list(self.viewers)
        for viewer in viewers:
            viewer._wake(frame)


class PreviewHub:
    """The preview side of a running server; thread-safe. ``watch`` from the event loop."""

    def __init__(self, server: ServerApi, cfg: PreviewConfig) -> None:
        self.server, self.cfg = server, cfg
        self._lock = threading.Lock()
        self._feeds: dict[tuple[str, Layers], _Feed] = {}
        self._closed = False

    def watch(self, camera_id: str, kind: ViewerKind, layers: Layers = frozenset()) -> Viewer:
        """A new viewer of a camera with optional ``layers`` (NotFoundError if there is no such camera); call from
        the event loop."""
        self.server.camera_config(camera_id)
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._closed:
                raise RuntimeError("the preview hub is closed")
            feed = self._feeds.get((camera_id, layers))
            if feed is None or feed.gone:
                feed = self._feeds[(camera_id, layers)] = _Feed(self, camera_id, layers)
                feed.thread.start()
            viewer = Viewer(self, feed, kind, loop)
            feed.viewers.add(viewer)
        if kind == "webrtc":
            feed.request_keyframe()
        return viewer

    def snapshot(self, camera_id: str, layers: Layers = frozenset()) -> PreviewFrame | None:
        """The latest annotated frame with ``layers``: the watched camera's current one, else drawn now (blocking:
        call it in a worker thread). None while the camera has no picture; NotFoundError for an unknown camera."""
        with self._lock:
            feed = self._feeds.get((camera_id, layers))
        if feed is not None and feed.latest is not None and feed.latest.live:
            return feed.latest
        frame = FrameRenderer(self.server, self.cfg, camera_id, layers=layers).render(0)
        return frame if frame is not None and frame.live else None

    def stats(self) -> PreviewStats:
        with self._lock:
            feeds = list(self._feeds.values())
            cameras: dict[str, CameraPreviewStats] = {}
            for feed in feeds:  # a camera watched with different layers has a feed for each: summed
                latest = feed.latest
                one = CameraPreviewStats(
                    viewers=dict(Counter(v.kind for v in feed.viewers)),
                    frames=feed.frames,
                    jpeg_encodes=feed.counts.jpeg,
                    vp8_encodes=feed.counts.vp8,
                    encode_cores=round(feed.cpu.rate(), 4),
                    width=latest.width if latest else 0,
                    height=latest.height if latest else 0,
                )
                before = cameras.get(feed.camera_id)
                cameras[feed.camera_id] = before.plus(one) if before else one
            # Each feed's latest frame and its WebRTC viewers' queues, each frame once (a queue holds frames that were
            # the latest). [*queue] copies in one step: the viewers' event loop changes their queues meanwhile.
            held = {id(p): p for f in feeds for p in [f.latest, *(q for v in f.viewers for q in [*v._queue])] if p}
            return PreviewStats(
                feeds=sum(f.thread.is_alive() for f in feeds),
                viewers=sum(len(f.viewers) for f in feeds),
                cameras=cameras,
                buffered_frames=len(held),
                buffered_bytes=sum(p.nbytes for p in held.values()),
            )

    def close(self) -> None:
        """Stop every feed (their viewers see the end of the stream)."""
        with self._lock:
            self._closed = True
            feeds = list(self._feeds.values())
            self._feeds.clear()
        for feed in feeds:
            feed.gone = True
            feed.stop()
            feed._notify(None)
        for feed in feeds:
            feed.thread.join(_JOIN_TIMEOUT_S)

    def _release(self, viewer: Viewer) -> None:
        with self._lock:
            key = (viewer.camera_id, viewer.layers)
            feed = self._feeds.get(key)
            if feed is None or viewer not in feed.viewers:
                return
            feed.viewers.discard(viewer)
            if not feed.viewers:
                feed.stop()
                del self._feeds[key]


__all__ = ["LAYERS", "Layer", "Layers", "PreviewFrame", "PreviewHub", "PreviewStats", "Viewer", "ViewerKind"]
