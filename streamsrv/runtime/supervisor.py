"""The supervisor: the decoder processes, the inference process and the background lanes, under one watchdog.

It composes ``Decoders`` (a process, ring and stats per camera), ``InferenceProcess`` (the model, its queues and
health) and ``Lanes`` (uploaded images and clip jobs), and fans each camera's ``FrameResult`` out to in-process
subscribers (rules, preview, metrics). The watchdog restarts decoders that die or hang, with back-off, and a dead
inference process, re-attaching every camera and lane, while the API stays up and reports the outage.

The parts share one lock: a restart of the inference process reads every camera and lane, and a camera's result
must not be counted while its camera is being replaced.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import multiprocessing as mp
import os
import threading
import time
from collections.abc import Callable

from streamsrv.config.models import AppConfig, CameraConfig
from streamsrv.ipc.messages import CameraCounters, RecordRequest
from streamsrv.ipc.signals import FramesReady
from streamsrv.runtime.capacity import Usage
from streamsrv.runtime.decoders import ClipCallback, Decoders, ExitCallback, Frame, StateCallback
from streamsrv.runtime.inference import InferenceHealth, InferenceProcess
from streamsrv.runtime.lanes import Lane, Lanes, ResultCallback
from streamsrv.runtime.overload import OverloadGovernor
from streamsrv.runtime.rings import sweep_stale_rings
from streamsrv.runtime.stats import CameraStats, RateMeter
from streamsrv.runtime.usage import GpuProbe, ProcessCpu, available_cores
from streamsrv.types import FrameResult

log = logging.getLogger(__name__)

WATCHDOG_INTERVAL_S = 0.25
GOVERN_INTERVAL_S = 1.0  # how often the overload governor and the processes' CPU are read
_JOIN_TIMEOUT_S = 5.0


class Supervisor:
    """Runs the pipeline for a set of cameras; thread-safe.

    >>> sup = Supervisor(load_config("streamsrv.yaml"))  # doctest: +SKIP
    >>> sup.start(); sup.camera_stats("door").processed_fps  # doctest: +SKIP
    """

    def __init__(self, cfg: AppConfig, instance: str | None = None) -> None:
        self.cfg = cfg
        self.instance = instance or str(os.getpid())
        ctx = mp.get_context("spawn")
        frames_ready = FramesReady(ctx)
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._subscribers: list[ResultCallback] = []
        self._threads: list[threading.Thread] = []
        self.inference_process = InferenceProcess(
            cfg, ctx, frames_ready, self._lock, self._stopping, self._dispatch, self._on_counters
        )
        send = self.inference_process.send
        self.decoders = Decoders(cfg, self.instance, ctx, frames_ready, self._lock, send)
        self.lanes = Lanes(self.instance, frames_ready, self._lock, send)
        self.governor = OverloadGovernor(cfg.capacity)
        self._cpu = {"inference": (ProcessCpu(), RateMeter()), "main": (ProcessCpu(), RateMeter())}
        self._gpu = GpuProbe()
        self._governed_at = float("-inf")
        self.started = False

    @property
    def inference(self) -> InferenceHealth:
        """The inference process's health as it changes (``inference_health`` gives a consistent copy)."""
        return self.inference_process.health

    # -- life cycle -------------------------------------------------------------------------------------------------
    def start(self) -> None:
        sweep_stale_rings()
        with self._lock:
            self.inference_process.start([])
            for cam in self.cfg.cameras:
                if cam.enabled:
                    self.decoders.add(cam)
        threads = ((self._watchdog, "watchdog"), (lambda: self.decoders.read_status(self._stopping), "decoder-status"))
        for target, name in threads:
            t = threading.Thread(target=target, name=f"streamsrv-{name}", daemon=True)
            t.start()
            self._threads.append(t)
        self.started = True

    def stop(self) -> None:
        """Stop every process, release shared memory. Idempotent."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        self.decoders.retire(self.decoders.detach_all())
        with self._lock:
            self.lanes.close_all()
            self.inference_process.stop()
        for t in self._threads:
            t.join(timeout=_JOIN_TIMEOUT_S)
        self._gpu.close()
        self.decoders.close_pipes()

    # -- cameras ----------------------------------------------------------------------------------------------------
    def camera_ids(self) -> list[str]:
        return self.decoders.ids()

    def add_camera(self, cam: CameraConfig) -> None:
        """Start a camera; raises ValueError if the id exists."""
        with self._lock:
            if cam.id in self.decoders.ids():
                raise ValueError(f"camera {cam.id!r} already exists")
            self.decoders.add(cam)

    def remove_camera(self, camera_id: str) -> None:
        with self._lock:
            old = self.decoders.detach(camera_id)
        self.decoders.retire([old])

    def replace_camera(self, cam: CameraConfig) -> None:
        """Apply a changed camera config (restarts only that camera)."""
        with self._lock:
            old = self.decoders.detach(cam.id) if cam.id in self.decoders.ids() else None
            self.decoders.add(cam)
        if old is not None:
            self.decoders.retire([old])

    def camera_stats(self, camera_id: str) -> CameraStats:
        return self.decoders.stats(camera_id)

    def all_stats(self) -> list[CameraStats]:
        return self.decoders.all_stats()

    def latest_frame(self, camera_id: str) -> Frame | None:
        """A copy of the camera's newest decoded frame (for previews and snapshots)."""
        return self.decoders.latest_frame(camera_id)

    def frame_at(self, camera_id: str, seq: int) -> Frame | None:
        """Frame ``seq`` of a camera if its ring still holds it (for event snapshots)."""
        return self.decoders.frame_at(camera_id, seq)

    def on_state_change(self, callback: StateCallback) -> None:
        """Call ``callback(camera_id, state, error)`` whenever a camera's state changes."""
        self.decoders.on_state_change(callback)

    def request_clip(self, camera_id: str, req: RecordRequest) -> int | None:
        """Ask a camera's decoder for an event clip: the decoder incarnation asked, None when no decoder runs."""
        return self.decoders.request_clip(camera_id, req)

    def on_decoder_exit(self, callback: ExitCallback) -> None:
        """Call ``callback(camera_id, incarnation)`` once a decoder incarnation has exited and its reports are read."""
        self.decoders.on_decoder_exit(callback)

    def on_clip(self, callback: ClipCallback) -> None:
        """Call ``callback(status)`` with each clip outcome the decoders report."""
        self.decoders.on_clip(callback)

    # -- inference --------------------------------------------------------------------------------------------------
    def open_lane(
        self,
        on_result: ResultCallback,
        track: bool = True,
        detect_fps: float = 25.0,
        max_width: int = 3840,
        max_height: int = 2160,
    ) -> Lane:
        """A background input to the inference loop; ``on_result`` gets each frame's result in order."""
        return self.lanes.open(on_result, track, detect_fps, max_width, max_height)

    def inference_health(self) -> InferenceHealth:
        """A copy of the inference process's health, consistent in itself."""
        with self._lock:
            h = self.inference_process.health
            return dataclasses.replace(h, labels=dict(h.labels))

    def capacity_usage(self) -> Usage:
        """What each camera and process uses now, and the overload governor's state (the capacity model's input)."""
        cameras = self.decoders.usage()
        with self._lock:
            device = self.inference_process.health.device
            cores = {role: meter.rate() for role, (_, meter) in self._cpu.items()}
            degrade = self.governor.state()
        gpu = self._gpu.read(device)
        return Usage(
            cameras=cameras,
            inference_cores=cores["inference"],
            main_cores=cores["main"],
            cpu_cores=available_cores(),
            gpu_busy=gpu.busy if gpu else None,
            gpu_memory_used_bytes=gpu.memory_used_bytes if gpu else None,
            gpu_memory_total_bytes=gpu.memory_total_bytes if gpu else None,
            degrade=degrade,
        )

    @property
    def ready(self) -> bool:
        """Model loaded and every enabled camera's decoder started."""
        with self._lock:
            return self.inference.model_loaded and self.decoders.all_started

    # -- results ----------------------------------------------------------------------------------------------------
    def subscribe(self, callback: ResultCallback) -> Callable[[], None]:
        """Call ``callback`` (on the results thread; keep it fast) for every camera's FrameResult."""
        with self._lock:
            self._subscribers.append(callback)
        return lambda: self._unsubscribe(callback)

    def _unsubscribe(self, callback: ResultCallback) -> None:
        with self._lock, contextlib.suppress(ValueError):
            self._subscribers.remove(callback)

    def _dispatch(self, result: FrameResult) -> None:
        if self.lanes.deliver(result):
            return
        with self._lock:
            if not self.decoders.on_result(result):
                return
            subscribers = list(self._subscribers)
        for callback in subscribers:
            try:
                callback(result)
            except Exception:  # one broken subscriber must not starve the others
                log.exception("result subscriber %r failed", callback)

    def _on_counters(self, counters: dict[str, CameraCounters]) -> None:
        self.decoders.on_inference_counters(counters)

    # -- watchdog ---------------------------------------------------------------------------------------------------
    def _watchdog(self) -> None:
        while not self._stopping.wait(WATCHDOG_INTERVAL_S):
            now = time.monotonic()
            with self._lock:
                if self._stopping.is_set():
                    return
                if self.inference_process.restart_due(now):
                    self.decoders.on_inference_restart()
                    self.inference_process.restart(self.decoders.attachments() + self.lanes.attachments())
                self.decoders.check(now)
                if now - self._governed_at >= GOVERN_INTERVAL_S:
                    self._governed_at = now
                    self._govern(now)

    def _govern(self, now: float) -> None:
        """Sample the processes' CPU and let the governor set every camera's effective fps; with the lock held."""
        proc = self.inference_process.process
        pids = {"inference": proc.pid if proc is not None else None, "main": os.getpid()}
        for role, (cpu, meter) in self._cpu.items():
            meter.sample(cpu.seconds(pids[role]), now)
        self.decoders.set_fps(self.governor.update(now, self.decoders.loads()))
