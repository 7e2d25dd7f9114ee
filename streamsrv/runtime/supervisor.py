"""The supervisor: starts, watches and restarts the decoder processes and the inference process.

It owns the cameras' runtime state in one place (config, ring, process, stats) and fans each
``FrameResult`` out to in-process subscribers (rules, preview, API). Decoders that die or hang are
restarted with back-off; a dead inference process is restarted and every camera re-attached, while
the API stays up and reports the outage.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import os
import queue
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from multiprocessing.queues import Queue
from pathlib import Path
from typing import Any, cast

import numpy as np
import numpy.typing as npt

from streamsrv.config.models import AppConfig, CameraConfig, redact_url
from streamsrv.decode.process import run_decoder
from streamsrv.errors import LaneClosed, NotFoundError
from streamsrv.infer.process import run_inference
from streamsrv.ipc.frame_ring import SHM_DIR, FrameRing, RingClosed, ring_path
from streamsrv.ipc.messages import (
    AddCamera,
    DecoderStatus,
    HeapStats,
    InferenceFailed,
    InferenceStatus,
    RemoveCamera,
)
from streamsrv.ipc.signals import FramesReady, StopFlag
from streamsrv.runtime.stats import RING_COUNTERS, CameraStats, CameraStatsTracker
from streamsrv.types import CameraState, FrameRef, FrameResult

log = logging.getLogger(__name__)
ResultCallback = Callable[[FrameResult], None]
StateCallback = Callable[[str, CameraState, str | None], None]

WATCHDOG_INTERVAL_S = 0.25
RESULTS_QUEUE_SIZE = 4096
_JOIN_TIMEOUT_S = 5.0
_HANG_MARGIN_S = 5.0
_MAX_RESTART_DELAY_S = 30.0
_LANE_POLL_S = 0.002
_INFER_STOP_GRACE_S = 2.0
_INCARNATION_HEX = 8
_INCARNATION = re.compile(rf"-[0-9a-f]{{{_INCARNATION_HEX}}}$")


def _restart_delay(restarts: int, base_s: float = 0.5) -> float:
    """Back-off before restarting a crashed process: doubles per restart, capped, so a crash loop stays cheap."""
    return min(_MAX_RESTART_DELAY_S, base_s * 2 ** min(restarts, 6))


@dataclass
class _CameraRuntime:
    cfg: CameraConfig
    ring: FrameRing
    stats: CameraStatsTracker
    process: BaseProcess | None = None
    status_conn: Connection | None = None
    stop: StopFlag | None = None
    restart_at: float | None = None
    finished: bool = False  # a file that ended: not restarted

    @property
    def hang_timeout_s(self) -> float:
        c = self.cfg
        return c.open_timeout_s + c.read_timeout_s + c.stall_timeout_s + _HANG_MARGIN_S


class Lane:
    """A lossless, low-priority input to the shared inference loop (uploaded images, clip jobs).

    ``submit`` waits for room in the lane's ring instead of dropping; results arrive, in order, at the
    callback given to ``Supervisor.open_lane``. Live cameras always go first.

    >>> lane = sup.open_lane(on_result=print, track=False)  # doctest: +SKIP
    >>> lane.submit(image_bgr); lane.close()  # doctest: +SKIP
    """

    def __init__(self, lane_id: str, ring: FrameRing, frames_ready: FramesReady, closer: Callable[[str], None]):
        self.id = lane_id
        self._ring = ring
        self._frames_ready = frames_ready
        self._closer = closer
        self.closed = False

    def submit(
        self, frame: npt.NDArray[np.uint8], video_ts: float = 0.0, frame_index: int = 0, timeout_s: float = 60.0
    ) -> int:
        """Queue a BGR frame; returns its sequence number. Raises TimeoutError if inference takes nothing,
        LaneClosed once the lane is closed (also from another thread while this waits)."""
        deadline = time.monotonic() + timeout_s
        try:
            while not self._ring.has_room():
                if time.monotonic() > deadline:
                    raise TimeoutError(f"inference took no frame from lane {self.id} for {timeout_s:g}s")
                time.sleep(_LANE_POLL_S)
            seq = self._ring.write(
                frame, frame_index=frame_index, wall_ts=time.time(), mono_ts=time.monotonic(), video_ts=video_ts
            )
        except RingClosed:
            raise LaneClosed(f"lane {self.id} is closed") from None
        self._frames_ready.notify()
        return seq

    def close(self) -> None:
        """Stop taking frames and release the ring; safe from any thread, also while ``submit`` waits."""
        if not self.closed:
            self.closed = True
            self._ring.close()
            self._ring.unlink()
            self._closer(self.id)


@dataclass
class _LaneRuntime:
    lane: Lane
    on_result: ResultCallback
    add: AddCamera


@dataclass
class InferenceHealth:
    """The inference process as the API reports it."""

    alive: bool = False
    model_loaded: bool = False
    backend: str = ""
    device: str = ""
    labels: dict[int, str] = field(default_factory=dict)
    restarts: int = 0
    error: str | None = None
    down_since: float | None = None  # epoch seconds of the current outage, if any
    results_dropped: int = 0
    heap: HeapStats | None = None


class Supervisor:
    """Runs the pipeline for a set of cameras; thread-safe.

    >>> sup = Supervisor(load_config("streamsrv.yaml"))  # doctest: +SKIP
    >>> sup.start(); sup.camera_stats("door").processed_fps  # doctest: +SKIP
    """

    def __init__(self, cfg: AppConfig, instance: str | None = None) -> None:
        self.cfg = cfg
        self.instance = instance or str(os.getpid())
        self._ctx = mp.get_context("spawn")
        self._lock = threading.RLock()
        self._cameras: dict[str, _CameraRuntime] = {}
        self._lanes: dict[str, _LaneRuntime] = {}
        self._subscribers: list[ResultCallback] = []
        self._state_listeners: list[StateCallback] = []
        self._frames_ready = FramesReady(self._ctx)
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self.inference = InferenceHealth()
        self._infer_proc: BaseProcess | None = None
        self._infer_stop: StopFlag | None = None
        self._control: Queue[Any] | None = None
        self._results: Queue[Any] | None = None
        self._infer_restart_at: float | None = None
        self.started = False

    # -- life cycle ------------------------------------------------------------------------
    def start(self) -> None:
        sweep_stale_rings()
        with self._lock:
            self._start_inference()
            for cam in self.cfg.cameras:
                if cam.enabled:
                    self._add(cam)
        for target, name in ((self._watchdog, "watchdog"), (self._read_status, "decoder-status")):
            t = threading.Thread(target=target, name=f"streamsrv-{name}", daemon=True)
            t.start()
            self._threads.append(t)
        self.started = True

    def stop(self) -> None:
        """Stop every process, release shared memory. Idempotent."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        with self._lock:
            cameras = [self._detach(cam_id) for cam_id in list(self._cameras)]
        self._retire(cameras)
        with self._lock:
            for rt in list(self._lanes.values()):
                rt.lane.close()
            self._stop_inference()
        for t in self._threads:
            t.join(timeout=_JOIN_TIMEOUT_S)

    # -- cameras -----------------------------------------------------------------------------
    def camera_ids(self) -> list[str]:
        with self._lock:
            return list(self._cameras)

    def camera_config(self, camera_id: str) -> CameraConfig:
        return self._get(camera_id).cfg

    def add_camera(self, cam: CameraConfig) -> None:
        """Start a camera; raises ValueError if the id exists."""
        with self._lock:
            if cam.id in self._cameras:
                raise ValueError(f"camera {cam.id!r} already exists")
            self._add(cam)

    def remove_camera(self, camera_id: str) -> None:
        with self._lock:
            self._get(camera_id)
            old = self._detach(camera_id)
        self._retire([old])

    def replace_camera(self, cam: CameraConfig) -> None:
        """Apply a changed camera config (restarts only that camera)."""
        with self._lock:
            old = self._detach(cam.id) if cam.id in self._cameras else None
            self._add(cam)
        if old is not None:
            self._retire([old])

    def camera_stats(self, camera_id: str) -> CameraStats:
        rt = self._get(camera_id)
        with self._lock:
            return rt.stats.snapshot()

    def all_stats(self) -> list[CameraStats]:
        with self._lock:
            return [rt.stats.snapshot() for rt in self._cameras.values()]

    def latest_frame(self, camera_id: str) -> tuple[FrameRef, npt.NDArray[np.uint8]] | None:
        """A copy of the camera's newest decoded frame (for previews and snapshots)."""
        rt = self._get(camera_id)
        return rt.ring.read_latest(0, camera_id)

    def frame_at(self, camera_id: str, seq: int) -> tuple[FrameRef, npt.NDArray[np.uint8]] | None:
        """Frame ``seq`` of a camera if its ring still holds it (for event snapshots)."""
        return self._get(camera_id).ring.read_seq(seq, camera_id)

    def open_lane(
        self,
        on_result: ResultCallback,
        track: bool = True,
        detect_fps: float = 25.0,
        max_width: int = 3840,
        max_height: int = 2160,
    ) -> Lane:
        """A background input to the inference loop; ``on_result`` gets each frame's result in order."""
        lane_id = f"lane:{uuid.uuid4().hex[:12]}"  # ':' cannot appear in camera ids, so ids never clash
        ring = FrameRing.create(f"{self.instance}-{lane_id}", max_width, max_height)
        add = AddCamera(lane_id, str(ring.path), detect_fps, background=True, track=track)
        lane = Lane(lane_id, ring, self._frames_ready, self._close_lane)
        with self._lock:
            self._lanes[lane_id] = _LaneRuntime(lane, on_result, add)
            if self._control is not None:
                self._control.put(add)
        return lane

    def _close_lane(self, lane_id: str) -> None:
        with self._lock:
            if self._lanes.pop(lane_id, None) is not None and self._control is not None:
                self._control.put(RemoveCamera(lane_id))

    def subscribe(self, callback: ResultCallback) -> Callable[[], None]:
        """Call ``callback`` (on the results thread; keep it fast) for every FrameResult."""
        with self._lock:
            self._subscribers.append(callback)
        return lambda: self._unsubscribe(callback)

    def on_state_change(self, callback: StateCallback) -> None:
        """Call ``callback(camera_id, state, error)`` whenever a camera's state changes."""
        with self._lock:
            self._state_listeners.append(callback)

    def _unsubscribe(self, callback: ResultCallback) -> None:
        with self._lock, contextlib.suppress(ValueError):
            self._subscribers.remove(callback)

    def _get(self, camera_id: str) -> _CameraRuntime:
        with self._lock:
            rt = self._cameras.get(camera_id)
        if rt is None:
            raise NotFoundError(f"camera {camera_id!r} not found")
        return rt

    def _add(self, cam: CameraConfig) -> None:
        ring = FrameRing.create(camera_ring_name(self.instance, cam.id), cam.max_width, cam.max_height)
        rt = _CameraRuntime(cam, ring, CameraStatsTracker(cam.id))
        self._cameras[cam.id] = rt
        self._spawn_decoder(rt)
        if self._control is not None:
            self._control.put(AddCamera(cam.id, str(ring.path), cam.detect_fps))

    def _detach(self, camera_id: str) -> _CameraRuntime:
        """Take a camera out of the pipeline; called with the lock held. ``_retire`` then stops it."""
        rt = self._cameras.pop(camera_id)
        if self._control is not None:
            self._control.put(RemoveCamera(camera_id))
        return rt

    def _retire(self, detached: list[_CameraRuntime]) -> None:
        """Stop detached cameras' decoders, all at once, and release their rings.

        Called without the lock: a decoder blocked in FFmpeg ignores SIGTERM, and waiting seconds for it to
        be killed must not stall results, stats and the API for every other camera.
        """
        for rt in detached:
            self._signal_decoder(rt)
        for rt in detached:
            self._reap_decoder(rt)
            rt.ring.close()
            rt.ring.unlink()

    # -- decoder processes -------------------------------------------------------------------
    def _spawn_decoder(self, rt: _CameraRuntime) -> None:
        reader, writer = self._ctx.Pipe(duplex=False)
        rt.stop = StopFlag(self._ctx)
        rt.status_conn = reader
        rt.ring.set_time("heartbeat_mono", time.monotonic())
        rt.process = self._ctx.Process(
            target=run_decoder,
            args=(
                rt.cfg.model_dump_json(),
                str(rt.ring.path),
                self._frames_ready,
                writer,
                rt.stop,
                self.cfg.inference.decoder_niceness,
            ),
            name=f"streamsrv-decoder-{rt.cfg.id}",
            daemon=True,
        )
        rt.process.start()
        writer.close()  # the child holds the only write end, so a dead child reads as EOF
        rt.restart_at = None

    def _stop_decoder(self, rt: _CameraRuntime) -> None:
        self._signal_decoder(rt)
        self._reap_decoder(rt)

    def _signal_decoder(self, rt: _CameraRuntime) -> None:
        proc = rt.process
        if proc is not None and proc.is_alive():
            assert rt.stop is not None
            rt.stop.set()
            proc.terminate()

    def _reap_decoder(self, rt: _CameraRuntime) -> None:
        proc = rt.process
        if proc is not None:
            proc.join(_JOIN_TIMEOUT_S)
            if proc.is_alive():
                proc.kill()
                proc.join(_JOIN_TIMEOUT_S)
        with self._lock:  # the status thread closes it too, when the decoder's end reads as EOF
            conn, rt.status_conn, rt.process = rt.status_conn, None, None
        if conn is not None:
            conn.close()

    def _check_decoder(self, rt: _CameraRuntime, now: float) -> None:
        proc = rt.process
        if proc is not None and proc.is_alive():
            if rt.ring.seconds_since_heartbeat() > rt.hang_timeout_s:
                log.warning("camera %s: decoder hung for %.0fs, killing it", rt.cfg.id, rt.hang_timeout_s)
                proc.kill()
                proc.join(_JOIN_TIMEOUT_S)
            return
        if rt.finished:
            return
        if rt.restart_at is None:
            code = proc.exitcode if proc is not None else None
            if code == 0 and rt.stats.state == CameraState.OFFLINE:
                rt.finished = True
                return
            delay = _restart_delay(rt.stats.decoder_restarts)
            self._set_state(rt, CameraState.RECONNECTING, f"decoder process exited (code {code}); restarting")
            rt.restart_at = now + delay
        elif now >= rt.restart_at:
            self._stop_decoder(rt)
            rt.stats.decoder_restarts += 1
            self._spawn_decoder(rt)

    def _read_status(self) -> None:
        while not self._stopping.is_set():
            with self._lock:
                conns = {rt.status_conn: rt for rt in self._cameras.values() if rt.status_conn is not None}
            if not conns:
                time.sleep(WATCHDOG_INTERVAL_S)
                continue
            try:
                ready_conns = wait(list(conns), timeout=WATCHDOG_INTERVAL_S)
            except OSError:  # a camera removed meanwhile closed its connection: look again
                continue
            for ready in ready_conns:
                conn = cast(Connection, ready)
                rt = conns[conn]
                try:
                    msg: DecoderStatus = conn.recv()
                except (EOFError, OSError):
                    with self._lock:
                        if rt.status_conn is conn:
                            rt.status_conn.close()
                            rt.status_conn = None
                    continue
                with self._lock:
                    if self._cameras.get(rt.cfg.id) is not rt:  # removed or replaced since: its news is old
                        continue
                    if msg.codec:
                        rt.stats.codec, rt.stats.width, rt.stats.height = msg.codec, msg.width, msg.height
                        rt.stats.source_fps, rt.stats.decoder = msg.source_fps, msg.decoder
                    self._set_state(rt, msg.state, msg.error)

    def _set_state(self, rt: _CameraRuntime, state: CameraState, error: str | None) -> None:
        changed = rt.stats.state != state
        rt.stats.state = state
        rt.stats.error = redact_url(error) if error else (None if state == CameraState.ONLINE else rt.stats.error)
        if changed:
            log.info("camera %s: %s%s", rt.cfg.id, state.value, f" ({rt.stats.error})" if error else "")
            for listener in list(self._state_listeners):
                listener(rt.cfg.id, state, rt.stats.error)

    # -- inference process -------------------------------------------------------------------
    def _start_inference(self) -> None:
        # fresh queues per incarnation: a process killed mid-write can leave a queue corrupt
        self._control = self._ctx.Queue()
        self._results = self._ctx.Queue(maxsize=RESULTS_QUEUE_SIZE)
        self._infer_stop = StopFlag(self._ctx)
        self._infer_proc = self._ctx.Process(
            target=run_inference,
            args=(self.cfg.model_dump_json(), self._control, self._results, self._frames_ready, self._infer_stop),
            name="streamsrv-inference",
            daemon=True,
        )
        self._infer_proc.start()
        self.inference.alive = True
        for rt in self._cameras.values():
            self._control.put(AddCamera(rt.cfg.id, str(rt.ring.path), rt.cfg.detect_fps))
        for lane in self._lanes.values():
            self._control.put(lane.add)
        t = threading.Thread(target=self._read_results, args=(self._results,), name="streamsrv-results", daemon=True)
        t.start()
        self._infer_restart_at = None

    def _stop_inference(self) -> None:
        proc = self._infer_proc
        if proc is None:
            return
        if self._infer_stop is not None:
            self._infer_stop.set()  # finishes the batch in flight
        proc.join(_INFER_STOP_GRACE_S)
        if proc.is_alive():
            proc.terminate()  # still starting up (importing torch, loading the model)
            proc.join(_JOIN_TIMEOUT_S)
        if proc.is_alive():
            proc.kill()
            proc.join(_JOIN_TIMEOUT_S)
        for q in (self._control, self._results):
            if q is not None:
                q.cancel_join_thread()
                q.close()
        self._infer_proc = None
        self.inference.alive = False

    def _check_inference(self, now: float) -> None:
        proc = self._infer_proc
        if proc is not None and proc.is_alive():
            return
        if self._infer_restart_at is None:
            code = proc.exitcode if proc is not None else None
            log.error("inference process exited (code %s); restarting", code)
            self.inference.alive = False
            self.inference.model_loaded = False
            self.inference.down_since = self.inference.down_since or time.time()
            self.inference.error = self.inference.error or f"inference process exited (code {code})"
            self._infer_restart_at = now + _restart_delay(self.inference.restarts, self.cfg.inference.restart_backoff_s)
        elif now >= self._infer_restart_at:
            self._stop_inference()
            self.inference.restarts += 1
            for rt in self._cameras.values():
                rt.stats.on_inference_restart()
            self._start_inference()

    def _read_results(self, results: Queue[Any]) -> None:
        while not self._stopping.is_set():
            try:
                msg = results.get(timeout=WATCHDOG_INTERVAL_S)
            except queue.Empty:
                if results is not self._results:
                    return  # a newer inference process has its own queue
                continue
            except (EOFError, OSError, ValueError):
                return
            if isinstance(msg, FrameResult):
                self._dispatch(msg)
            elif isinstance(msg, InferenceStatus):
                self._on_inference_status(msg)
            elif isinstance(msg, InferenceFailed):
                log.error("inference failed: %s", msg.error)
                self.inference.error = msg.error

    def _dispatch(self, result: FrameResult) -> None:
        with self._lock:
            lane = self._lanes.get(result.camera_id)
        if lane is not None:
            try:
                lane.on_result(result)
            except Exception:
                log.exception("lane %s result callback failed", result.camera_id)
            return
        with self._lock:
            rt = self._cameras.get(result.camera_id)
            if rt is None:
                return
            rt.stats.on_result(result)
            subscribers = list(self._subscribers)
        for callback in subscribers:
            try:
                callback(result)
            except Exception:  # one broken subscriber must not starve the others
                log.exception("result subscriber %r failed", callback)

    def _on_inference_status(self, msg: InferenceStatus) -> None:
        with self._lock:
            h = self.inference
            h.model_loaded, h.backend, h.device, h.labels = True, msg.backend, msg.device, msg.labels
            h.results_dropped = msg.results_dropped
            h.heap = msg.heap
            h.error, h.down_since = None, None
            for cam_id, counters in msg.cameras.items():
                rt = self._cameras.get(cam_id)
                if rt is not None:
                    rt.stats.on_inference_counters(counters)

    # -- watchdog ----------------------------------------------------------------------------
    def _watchdog(self) -> None:
        while not self._stopping.wait(WATCHDOG_INTERVAL_S):
            now = time.monotonic()
            with self._lock:
                if self._stopping.is_set():
                    return
                self._check_inference(now)
                for rt in self._cameras.values():
                    self._check_decoder(rt, now)
                    s = rt.stats
                    for k in RING_COUNTERS:
                        s.ring_counts[k] = rt.ring.counter(k)
                    last = rt.ring.time_value("last_frame_mono")
                    s.last_frame_mono = last or None
                    s.sample_rates(now)

    @property
    def ready(self) -> bool:
        """Model loaded and every enabled camera's decoder started."""
        with self._lock:
            return self.inference.model_loaded and all(rt.process is not None for rt in self._cameras.values())


def camera_ring_name(instance: str, camera_id: str) -> str:
    """A new ring name for a camera's decoder of ``instance``.

    One ring per decoder incarnation: a replaced camera's old decoder may still be stopping, its ring with it.
    """
    return f"{instance}-{camera_id}-{uuid.uuid4().hex[:_INCARNATION_HEX]}"


def ring_camera_id(ring_file: str, instance: str) -> str | None:
    """The camera whose ring is the /dev/shm file ``ring_file`` (see ``camera_ring_name``); None when the file is
    not a camera ring of ``instance`` (another instance's, or an upload lane's).

    >>> ring_camera_id(ring_path(camera_ring_name("4242", "door")).name, "4242")
    'door'
    """
    prefix = ring_path(f"{instance}-").name
    match = _INCARNATION.search(ring_file)
    if not ring_file.startswith(prefix) or match is None:
        return None
    return ring_file[len(prefix) : match.start()]


def sweep_stale_rings(shm_dir: Path = SHM_DIR) -> int:
    """Remove rings left in /dev/shm by streamsrv instances that died without cleaning up."""
    removed = 0
    for path in shm_dir.glob("streamsrv-*"):
        pid = path.name.split("-")[1]
        if pid.isdigit() and not _pid_alive(int(pid)):
            path.unlink(missing_ok=True)
            removed += 1
    return removed


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


__all__ = ["CameraStats", "InferenceHealth", "Supervisor", "ring_path", "sweep_stale_rings"]
