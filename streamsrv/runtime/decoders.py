"""The cameras' decoder processes: spawning them, watching them, restarting them with back-off, and their stats.

Each camera has a decoder process writing to its own frame ring (one ring per decoder incarnation, see
``camera_ring_name``) and a pipe on which it reports its state. A decoder that dies is restarted after a back-off;
one that stops beating its heartbeat (hung in a native call) is killed first. A file that ended is not restarted.

Each start of a decoder is an incarnation, numbered across all cameras (a replaced camera's old decoder and its
new one never share a number). Once an incarnation's status pipe reads as EOF it has
exited and everything it reported has been read, so the clips it was asked for and never reported are lost: the
``on_decoder_exit`` listeners hear of it then (a restart, a kill after a hang, a removal), not a timeout later.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable, Mapping
from multiprocessing.connection import Connection, wait
from multiprocessing.context import SpawnContext
from multiprocessing.process import BaseProcess
from typing import cast

import numpy as np
import numpy.typing as npt

from streamsrv.config.models import AppConfig, CameraConfig, redact_url
from streamsrv.config.record import clip_root
from streamsrv.decode.process import run_decoder
from streamsrv.errors import NotFoundError
from streamsrv.ipc.frame_ring import FrameRing
from streamsrv.ipc.messages import AddCamera, CameraCounters, ClipStatus, DecoderStatus, RecordRequest, RemoveCamera
from streamsrv.ipc.signals import FramesReady, StopFlag
from streamsrv.runtime.capacity import CameraUsage
from streamsrv.runtime.decoder_slot import DecoderSlot
from streamsrv.runtime.inference import restart_delay
from streamsrv.runtime.overload import CameraLoad
from streamsrv.runtime.rings import camera_ring_name
from streamsrv.runtime.stats import RING_COUNTERS, CameraStats, CameraStatsTracker
from streamsrv.types import CameraState, FrameRef, FrameResult

log = logging.getLogger(__name__)
StateCallback = Callable[[str, CameraState, str | None], None]
ClipCallback = Callable[[ClipStatus], None]
ExitCallback = Callable[[str, int], None]  # (camera id, incarnation) whose decoder has exited
ControlSend = Callable[[AddCamera | RemoveCamera], None]
Frame = tuple[FrameRef, npt.NDArray[np.uint8]]

STATUS_POLL_S = 0.25
_JOIN_TIMEOUT_S = 5.0


class Decoders:
    """The running cameras, each with its decoder process, ring and stats; thread-safe under the supervisor's lock.

    ``send`` hands attach and detach messages to the inference process. Removing a camera takes two steps,
    ``detach`` under the lock and ``retire`` outside it: a decoder blocked in FFmpeg ignores SIGTERM, and waiting
    seconds for it to be killed must not stall results, stats and the API for every other camera.
    """

    def __init__(
        self,
        cfg: AppConfig,
        instance: str,
        ctx: SpawnContext,
        frames_ready: FramesReady,
        lock: threading.RLock,
        send: ControlSend,
    ) -> None:
        self.cfg = cfg
        self._instance = instance
        self._ctx = ctx
        self._frames_ready = frames_ready
        self._lock = lock
        self._send = send
        self._cameras: dict[str, DecoderSlot] = {}
        self._state_listeners: list[StateCallback] = []
        self._clip_listeners: list[ClipCallback] = []
        self._exit_listeners: list[ExitCallback] = []
        # status pipes of reaped decoders not read to their end yet: (camera id, incarnation) of each
        self._orphans: dict[Connection, tuple[str, int]] = {}
        self._incarnations = itertools.count(1)
        self.clip_dir = clip_root(cfg.base_dir, cfg.record)

    # -- the camera set ---------------------------------------------------------------------------------------------
    def ids(self) -> list[str]:
        with self._lock:
            return list(self._cameras)

    def add(self, cam: CameraConfig) -> None:
        """Start a camera's decoder and attach its ring; called with the lock held."""
        ring = FrameRing.create(camera_ring_name(self._instance, cam.id), cam.max_width, cam.max_height)
        rt = DecoderSlot(cam, ring, CameraStatsTracker(cam.id))
        s = rt.stats
        s.priority, s.detect_fps, s.effective_fps = cam.priority, cam.detect_fps, cam.detect_fps
        s.target_ms = cam.frame_age_target_ms(self.cfg.inference.stale_after_s)
        self._cameras[cam.id] = rt
        self._spawn(rt)
        self._send(rt.attach)

    def detach(self, camera_id: str) -> DecoderSlot:
        """Take a camera out of the pipeline (NotFoundError if it is not in); called with the lock held.
        ``retire`` then stops it."""
        rt = self._get(camera_id)
        del self._cameras[camera_id]
        self._send(RemoveCamera(camera_id))
        return rt

    def detach_all(self) -> list[DecoderSlot]:
        with self._lock:
            return [self.detach(camera_id) for camera_id in list(self._cameras)]

    def retire(self, detached: list[DecoderSlot]) -> None:
        """Stop detached cameras' decoders, all at once, and release their rings; called without the lock."""
        for rt in detached:
            self._signal(rt)
        for rt in detached:
            self._reap(rt)
            rt.ring.close()
            rt.ring.unlink()

    def attachments(self) -> list[AddCamera]:
        """What a new inference process must be told to read every camera's ring; called with the lock held."""
        return [rt.attach for rt in self._cameras.values()]

    @property
    def all_started(self) -> bool:
        """Every camera's decoder process has been started."""
        with self._lock:
            return all(rt.process is not None for rt in self._cameras.values())

    # -- what the API reads -----------------------------------------------------------------------------------------
    def stats(self, camera_id: str) -> CameraStats:
        rt = self._get(camera_id)
        with self._lock:
            return rt.stats.snapshot()

    def all_stats(self) -> list[CameraStats]:
        with self._lock:
            return [rt.stats.snapshot() for rt in self._cameras.values()]

    def latest_frame(self, camera_id: str) -> Frame | None:
        """A copy of the camera's newest decoded frame (for previews and snapshots)."""
        return self._get(camera_id).ring.read_latest(0, camera_id)

    def frame_at(self, camera_id: str, seq: int) -> Frame | None:
        """Frame ``seq`` of a camera if its ring still holds it (for event snapshots)."""
        return self._get(camera_id).ring.read_seq(seq, camera_id)

    def process(self, camera_id: str) -> BaseProcess | None:
        """The camera's current decoder process (None between a death and its restart)."""
        return self._get(camera_id).process

    def on_state_change(self, callback: StateCallback) -> None:
        """Call ``callback(camera_id, state, error)`` whenever a camera's state changes."""
        with self._lock:
            self._state_listeners.append(callback)

    def on_clip(self, callback: ClipCallback) -> None:
        """Call ``callback(status)`` with each clip outcome a decoder reports (on the status thread)."""
        with self._lock:
            self._clip_listeners.append(callback)

    def on_decoder_exit(self, callback: ExitCallback) -> None:
        """Call ``callback(camera_id, incarnation)`` once each decoder incarnation has exited and all it reported
        was read (on the status thread)."""
        with self._lock:
            self._exit_listeners.append(callback)

    def request_clip(self, camera_id: str, req: RecordRequest) -> int | None:
        """Ask the camera's decoder for a clip: the incarnation asked, or None when no decoder runs to ask."""
        with self._lock:
            rt = self._cameras.get(camera_id)
            conn = rt.commands if rt is not None and rt.process is not None else None
            if rt is None or conn is None:
                return None
            try:
                conn.send(req)
            except OSError:  # the decoder just died; its restart gets a new pipe
                return None
            return rt.incarnation

    # -- what inference reports -------------------------------------------------------------------------------------
    def on_result(self, result: FrameResult) -> bool:
        """Count a result in its camera's stats; False when the camera is gone. Called with the lock held."""
        rt = self._cameras.get(result.camera_id)
        if rt is None:
            return False
        rt.stats.on_result(result)
        return True

    def on_inference_counters(self, counters: dict[str, CameraCounters]) -> None:
        """Take the inference process's per-camera counters; called with the lock held."""
        for camera_id, c in counters.items():
            rt = self._cameras.get(camera_id)
            if rt is not None:
                rt.stats.on_inference_counters(c)

    def on_inference_restart(self) -> None:
        """Keep what the dying inference process counted; called with the lock held."""
        for rt in self._cameras.values():
            rt.stats.on_inference_restart()

    # -- watching ---------------------------------------------------------------------------------------------------
    def check(self, now: float) -> None:
        """The watchdog's round: restart dead or hung decoders, sample the rings' counters; with the lock held."""
        for rt in self._cameras.values():
            self._check(rt, now)
            s = rt.stats
            for k in RING_COUNTERS:
                s.ring_counts[k] = rt.ring.counter(k)
            last = rt.ring.time_value("last_frame_mono")
            s.last_frame_mono = last or None
            s.sample_rates(now)
            s.cpu.sample(rt.cpu.seconds(rt.process.pid if rt.process is not None else None), now)

    # -- capacity ---------------------------------------------------------------------------------------------------
    def loads(self) -> list[CameraLoad]:
        """Every camera as the overload governor reads it, with its frame ages since the last call; with the lock
        held. Priority and target come from the registry's config (they change without a restart)."""
        current = {c.id: c for c in self.cfg.cameras}
        stale_after_s = self.cfg.inference.stale_after_s
        return [rt.load(current.get(rt.cfg.id, rt.cfg), stale_after_s) for rt in self._cameras.values()]

    def set_fps(self, fps: Mapping[str, float]) -> None:
        """Pace each camera's decoder to its effective detect_fps (through its ring); with the lock held."""
        for camera_id, value in fps.items():
            rt = self._cameras.get(camera_id)
            if rt is not None:
                rt.pace(value)

    def usage(self) -> list[CameraUsage]:
        """What each camera costs now (its preview's share is the API's to add)."""
        with self._lock:
            return [rt.usage() for rt in self._cameras.values()]

    def read_status(self, stopping: threading.Event) -> None:
        """Read the decoders' state reports until ``stopping`` is set; the status thread's loop."""
        while not stopping.is_set():
            with self._lock:
                conns: dict[Connection, tuple[DecoderSlot | None, str, int]] = {
                    rt.status_conn: (rt, rt.cfg.id, rt.incarnation)
                    for rt in self._cameras.values()
                    if rt.status_conn is not None
                }
                conns.update({conn: (None, *whose) for conn, whose in self._orphans.items()})
            if not conns:
                time.sleep(STATUS_POLL_S)
                continue
            try:
                ready_conns = wait(list(conns), timeout=STATUS_POLL_S)
            except OSError:  # a camera removed meanwhile closed its connection: look again
                continue
            for ready in ready_conns:
                conn = cast(Connection, ready)
                self._receive(conn, *conns[conn])

    def close_pipes(self) -> None:
        """Close the status pipes the status thread no longer reads (it has stopped; so have the decoders)."""
        with self._lock:
            for conn in self._orphans:
                conn.close()
            self._orphans.clear()

    def _receive(self, conn: Connection, rt: DecoderSlot | None, camera_id: str, incarnation: int) -> None:
        try:
            msg: DecoderStatus | ClipStatus = conn.recv()
        except (EOFError, OSError):
            with self._lock:
                if rt is not None and rt.status_conn is conn:
                    rt.status_conn = None
                self._orphans.pop(conn, None)
                conn.close()
                exit_listeners = list(self._exit_listeners)
            for on_exit in exit_listeners:
                on_exit(camera_id, incarnation)
            return
        if isinstance(msg, ClipStatus):  # a clip is news even from a camera removed since
            for callback in list(self._clip_listeners):
                callback(msg)
            return
        with self._lock:
            if rt is None or self._cameras.get(rt.cfg.id) is not rt:  # removed or replaced since: its news is old
                return
            if msg.codec:
                rt.stats.codec, rt.stats.width, rt.stats.height = msg.codec, msg.width, msg.height
                rt.stats.source_fps, rt.stats.decoder = msg.source_fps, msg.decoder
            self._set_state(rt, msg.state, msg.error)

    def _get(self, camera_id: str) -> DecoderSlot:
        with self._lock:
            rt = self._cameras.get(camera_id)
        if rt is None:
            raise NotFoundError(f"camera {camera_id!r} not found")
        return rt

    def _set_state(self, rt: DecoderSlot, state: CameraState, error: str | None) -> None:
        changed = rt.stats.state != state
        rt.stats.state = state
        rt.stats.error = redact_url(error) if error else (None if state == CameraState.ONLINE else rt.stats.error)
        if changed:
            log.info("camera %s: %s%s", rt.cfg.id, state.value, f" ({rt.stats.error})" if error else "")
            for listener in list(self._state_listeners):
                listener(rt.cfg.id, state, rt.stats.error)

    def _check(self, rt: DecoderSlot, now: float) -> None:
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
            delay = restart_delay(rt.stats.decoder_restarts)
            self._set_state(rt, CameraState.RECONNECTING, f"decoder process exited (code {code}); restarting")
            rt.restart_at = now + delay
        elif now >= rt.restart_at:
            self._signal(rt)
            self._reap(rt)
            rt.stats.decoder_restarts += 1
            self._spawn(rt)

    # -- the processes ----------------------------------------------------------------------------------------------
    def _spawn(self, rt: DecoderSlot) -> None:
        reader, writer = self._ctx.Pipe(duplex=False)
        commands_in, rt.commands = self._ctx.Pipe(duplex=False)
        rt.stop = StopFlag(self._ctx)
        rt.status_conn = reader
        rt.incarnation = next(self._incarnations)
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
                commands_in,
                str(self.clip_dir),
            ),
            name=f"streamsrv-decoder-{rt.cfg.id}",
            daemon=True,
        )
        rt.process.start()
        writer.close()  # the child holds the only write end, so a dead child reads as EOF
        commands_in.close()
        rt.restart_at = None

    def _signal(self, rt: DecoderSlot) -> None:
        proc = rt.process
        if proc is not None and proc.is_alive():
            assert rt.stop is not None
            rt.stop.set()
            proc.terminate()

    def _reap(self, rt: DecoderSlot) -> None:
        proc = rt.process
        if proc is not None:
            proc.join(_JOIN_TIMEOUT_S)
            if proc.is_alive():
                proc.kill()
                proc.join(_JOIN_TIMEOUT_S)
        with self._lock:
            conn, rt.status_conn, rt.process = rt.status_conn, None, None
            commands, rt.commands = rt.commands, None
            if conn is not None:  # the status thread reads it to its end (reports, then EOF) and closes it
                self._orphans[conn] = (rt.cfg.id, rt.incarnation)
        if commands is not None:
            commands.close()
