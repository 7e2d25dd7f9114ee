"""The inference process: the only owner of the model; batches the newest frame of every camera.

Each cycle takes the newest not-yet-inferred frame of each ready camera (latest-frame-wins: frames
overwritten in a ring before we got to them are counted as dropped), discards frames older than the
staleness budget, runs one forward pass, tracks per camera and emits a ``FrameResult`` per frame.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import os
import queue
import signal
import time
from dataclasses import dataclass
from multiprocessing.queues import Queue
from types import FrameType
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from setproctitle import setproctitle

from streamsrv.config.models import AppConfig
from streamsrv.errors import StreamsrvError
from streamsrv.infer.batcher import BatchPolicy, Candidate
from streamsrv.infer.heap import HeapKeeper
from streamsrv.ipc.frame_ring import FrameRing
from streamsrv.ipc.messages import (
    AddCamera,
    CameraCounters,
    InferenceFailed,
    InferenceStatus,
    RemoveCamera,
)
from streamsrv.ipc.signals import FramesReady, StopFlag, exit_with_parent
from streamsrv.track import Tracker, create_tracker
from streamsrv.types import FrameRef, FrameResult, TrackQuality, Tracks

if TYPE_CHECKING:  # torch-heavy: imported only inside the inference process
    from streamsrv.infer.detector import Detector

log = logging.getLogger(__name__)
STATUS_INTERVAL_S = 1.0
_IDLE_WAIT_S = 0.1


@dataclass
class _Camera:
    camera_id: str
    ring: FrameRing
    tracker: Tracker | None
    background: bool = False
    last_seq: int = 0
    waiting_since: float | None = None  # background lanes: when the oldest unconsumed frame was first seen
    processed: int = 0
    dropped_latest_wins: int = 0
    dropped_stale: int = 0

    def counters(self) -> CameraCounters:
        # A copy: the message is pickled later, on the queue's feeder thread, while tracking goes on.
        tracks = dataclasses.replace(self.tracker.quality) if self.tracker else TrackQuality()
        return CameraCounters(self.processed, self.dropped_latest_wins, self.dropped_stale, tracks)


class InferenceLoop:
    """Batching, detection and tracking for all cameras; runs in the inference process."""

    def __init__(self, cfg: AppConfig, detector: Detector, frames_ready: FramesReady) -> None:
        self.cfg = cfg
        self.detector = detector
        self.frames_ready = frames_ready
        self.policy = BatchPolicy(cfg.inference.max_batch, cfg.inference.max_wait_ms / 1e3)
        self.background_batch = cfg.inference.background_max_batch
        self.background_max_wait_s = cfg.inference.background_max_wait_s
        self.cameras: dict[str, _Camera] = {}
        self.device = getattr(detector.backend, "device", "cpu")
        self.heap = HeapKeeper()

    def add_camera(self, msg: AddCamera) -> None:
        self.remove_camera(RemoveCamera(msg.camera_id))
        ring = FrameRing.attach(msg.ring_path, writable=msg.background)
        tracker = create_tracker(self.cfg.tracker, msg.detect_fps, self.device) if msg.track else None
        # A lane resumes after the last frame consumed (lossless, even across an inference restart); a
        # camera's older frames predate us, so it starts from the newest.
        start = ring.counter("consumed_seq") if msg.background else max(0, ring.latest_seq - 1)
        self.cameras[msg.camera_id] = _Camera(msg.camera_id, ring, tracker, msg.background, last_seq=start)

    def remove_camera(self, msg: RemoveCamera) -> None:
        cam = self.cameras.pop(msg.camera_id, None)
        if cam is not None:
            cam.ring.close()

    def ready(self, background: bool = False) -> list[Candidate]:
        out = []
        now = time.monotonic()
        for cam in self.cameras.values():
            seq = cam.ring.latest_seq
            if cam.background == background and seq > cam.last_seq:
                if background and cam.waiting_since is None:
                    cam.waiting_since = now
                out.append(Candidate(cam.camera_id, seq, cam.ring.latest_mono_ts()))
        return out

    def next_batch(self, stop: StopFlag) -> list[Candidate]:
        """Wait (bounded) for frames; returns the cameras to infer now, possibly none.

        Live cameras go first. Background lanes run when no live frame is waiting, in small batches,
        so a live frame that arrives meanwhile waits for at most one small batch; and a background
        frame that has waited ``background_max_wait_s`` runs anyway, so uploads never starve on a
        saturated server.
        """
        ready = self.ready()
        background = self.ready(background=True)
        if background and (not ready or self._background_starving()):
            return self._background_batch(background)
        if not ready:
            self.frames_ready.wait(_IDLE_WAIT_S)
            return []
        live = sum(1 for cam in self.cameras.values() if not cam.background)
        while not stop.is_set() and (wait := self.policy.wait_s(ready, live, time.monotonic())) > 0:
            self.frames_ready.wait(wait)
            ready = self.ready()
        return self.policy.choose(ready)

    def _background_starving(self) -> bool:
        now = time.monotonic()
        return any(
            cam.waiting_since is not None and now - cam.waiting_since > self.background_max_wait_s
            for cam in self.cameras.values()
        )

    def _background_batch(self, ready: list[Candidate]) -> list[Candidate]:
        def order(c: Candidate) -> tuple[bool, float]:
            # Untracked lanes carry single-image requests that a client is waiting on: ahead of clip jobs.
            cam = self.cameras[c.camera_id]
            return cam.tracker is not None, cam.waiting_since or 0.0

        return sorted(ready, key=order)[: self.background_batch]

    def run_batch(self, chosen: list[Candidate]) -> list[FrameResult]:
        """Read, infer and track one batch; returns a result per inferred frame."""
        taken: list[tuple[_Camera, FrameRef, npt.NDArray[np.uint8]]] = []
        now = time.monotonic()
        for c in chosen:
            cam = self.cameras.get(c.camera_id)
            if cam is None:
                continue
            if cam.background:
                got = cam.ring.read_seq(cam.last_seq + 1, cam.camera_id)
                if got is None:
                    continue
                cam.last_seq = got[0].seq
                cam.ring.set_int("consumed_seq", cam.last_seq)
                cam.waiting_since = None
                taken.append((cam, *got))
                continue
            got = cam.ring.read_latest(cam.last_seq, cam.camera_id)
            if got is None:  # torn read: the decoder lapped us; try again next cycle
                continue
            ref, frame = got
            cam.dropped_latest_wins += max(0, ref.seq - cam.last_seq - 1)
            cam.last_seq = ref.seq
            if now - ref.mono_ts > self.cfg.inference.stale_after_s:
                cam.dropped_stale += 1
                continue
            taken.append((cam, ref, frame))
        if not taken:
            return []
        start = time.monotonic()
        detections = self.detector.detect([f for _, _, f in taken])
        inference_ms = (time.monotonic() - start) * 1e3
        results = []
        for (cam, ref, frame), dets in zip(taken, detections, strict=True):
            if cam.tracker is None:
                tracks = Tracks.untracked(dets)
            else:
                # Lanes carry clips, tracked in video time like analyze; cameras in monotonic time.
                tracks = cam.tracker.update(dets, frame, ref.time_s("video" if cam.background else "live"))
            cam.processed += 1
            results.append(
                FrameResult(
                    frame=ref,
                    tracks=tracks,
                    labels=self.detector.labels,
                    frame_age_s=start - ref.mono_ts,
                    inference_ms=inference_ms,
                    batch_size=len(taken),
                )
            )
        return results

    def status(self, results_dropped: int) -> InferenceStatus:
        return InferenceStatus(
            backend=self.detector.backend.name,
            device=self.device,
            labels=self.detector.labels,
            cameras={cid: cam.counters() for cid, cam in self.cameras.items()},
            results_dropped=results_dropped,
            heap=self.heap.tick(),
            ts=time.time(),
        )

    def close(self) -> None:
        for cid in list(self.cameras):
            self.remove_camera(RemoveCamera(cid))


def run_inference(
    cfg_json: str, control: Queue[Any], results: Queue[Any], frames_ready: FramesReady, stop: StopFlag
) -> None:
    """Process entry point: load the model, then loop until ``stop`` is set."""
    cfg = AppConfig.model_validate_json(cfg_json)
    setproctitle("streamsrv: inference")  # not `python -c from multiprocessing.spawn ...` in `ps`
    serving = False

    def on_term(signum: int, frame: FrameType | None) -> None:
        stop.set()
        if not serving:  # still importing torch or loading the model: nothing to finish, leave now
            raise SystemExit(0)

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    exit_with_parent()
    # Imported after the signal handlers are set: loading torch takes seconds, and a stop during it must work.
    from streamsrv.infer.backend import create_backend
    from streamsrv.infer.detector import Detector

    try:
        detector = Detector(create_backend(cfg.model, cfg.inference), cfg.model, cfg.inference.imgsz)
    except StreamsrvError as exc:
        results.put_nowait(InferenceFailed(str(exc)))
        return
    loop = InferenceLoop(cfg, detector, frames_ready)
    # The model's object graph never changes: keep the cyclic GC from rescanning it on the hot path.
    gc.freeze()
    serving = True
    # Never block on a full or orphaned results queue: a stuck put would make SIGTERM useless.
    results.cancel_join_thread()
    results_dropped = 0
    _offer(results, loop.status(results_dropped))
    next_status = time.monotonic() + STATUS_INTERVAL_S
    try:
        while not stop.is_set():
            _drain_control(loop, control)
            for result in loop.run_batch(loop.next_batch(stop)):
                if not _offer(results, result):
                    results_dropped += 1
            if time.monotonic() >= next_status:
                _offer(results, loop.status(results_dropped))
                next_status = time.monotonic() + STATUS_INTERVAL_S
    finally:
        loop.close()
    # Interpreter teardown would spend seconds collecting torch's objects; everything is released already.
    os._exit(0)


def _offer(results: Queue[Any], message: object) -> bool:
    try:
        results.put_nowait(message)
    except queue.Full:
        return False
    return True


def _drain_control(loop: InferenceLoop, control: Queue[Any]) -> None:
    while True:
        try:
            msg = control.get_nowait()
        except queue.Empty:
            return
        try:
            if isinstance(msg, AddCamera):
                loop.add_camera(msg)
            elif isinstance(msg, RemoveCamera):
                loop.remove_camera(msg)
        except (OSError, ValueError) as exc:  # a vanished ring must not take the other cameras down
            log.warning("control message %s failed: %s", msg, exc)
