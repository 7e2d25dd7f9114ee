"""The inference process: starting, stopping and restarting it, reading its results, and its health.

One process runs the model for every camera and lane. Control messages (attach or detach a ring) go to it on a
queue, results and status come back on another; both queues are new for every incarnation, because a process
killed mid-write can leave a queue corrupt. A dead process is restarted with back-off while the API stays up and
reports the outage (``InferenceHealth``).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.context import SpawnContext
from multiprocessing.process import BaseProcess
from multiprocessing.queues import Queue
from typing import Any

from streamsrv.config.models import AppConfig
from streamsrv.infer.process import run_inference
from streamsrv.ipc.messages import (
    AddCamera,
    CameraCounters,
    HeapStats,
    InferenceFailed,
    InferenceStatus,
    RemoveCamera,
)
from streamsrv.ipc.signals import FramesReady, StopFlag
from streamsrv.types import FrameResult

log = logging.getLogger(__name__)

RESULTS_QUEUE_SIZE = 4096
RESULTS_POLL_S = 0.25
_JOIN_TIMEOUT_S = 5.0
_INFER_STOP_GRACE_S = 2.0
_MAX_RESTART_DELAY_S = 30.0


def restart_delay(restarts: int, base_s: float = 0.5) -> float:
    """Back-off before restarting a crashed process: doubles per restart, capped, so a crash loop stays cheap.

    >>> [restart_delay(n) for n in (0, 1, 2, 10)]
    [0.5, 1.0, 2.0, 30.0]
    """
    return min(_MAX_RESTART_DELAY_S, base_s * 2 ** min(restarts, 6))


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


class InferenceProcess:
    """The one inference process and its queues; thread-safe under the supervisor's lock.

    Results go to ``on_result`` and each status's per-camera counters to ``on_counters``, both on the results
    thread (``on_counters`` with the lock held).
    """

    def __init__(
        self,
        cfg: AppConfig,
        ctx: SpawnContext,
        frames_ready: FramesReady,
        lock: threading.RLock,
        stopping: threading.Event,
        on_result: Callable[[FrameResult], None],
        on_counters: Callable[[dict[str, CameraCounters]], None],
    ) -> None:
        self.cfg = cfg
        self._ctx = ctx
        self._frames_ready = frames_ready
        self._lock = lock
        self._stopping = stopping
        self._on_result = on_result
        self._on_counters = on_counters
        self.health = InferenceHealth()
        self.process: BaseProcess | None = None
        self._stop: StopFlag | None = None
        self._control: Queue[Any] | None = None
        self._results: Queue[Any] | None = None
        self._restart_at: float | None = None

    def send(self, msg: AddCamera | RemoveCamera) -> None:
        """Tell the running process to attach or detach a ring; called with the lock held. Without a process
        there is nobody to tell: the next one is given every ring in ``start``."""
        if self._control is not None:
            self._control.put(msg)

    def start(self, attach: list[AddCamera]) -> None:
        """Start a process reading the rings in ``attach``; called with the lock held."""
        # fresh queues per incarnation: a process killed mid-write can leave a queue corrupt
        self._control = self._ctx.Queue()
        self._results = self._ctx.Queue(maxsize=RESULTS_QUEUE_SIZE)
        self._stop = StopFlag(self._ctx)
        self.process = self._ctx.Process(
            target=run_inference,
            args=(self.cfg.model_dump_json(), self._control, self._results, self._frames_ready, self._stop),
            name="streamsrv-inference",
            daemon=True,
        )
        self.process.start()
        self.health.alive = True
        for msg in attach:
            self._control.put(msg)
        t = threading.Thread(target=self._read_results, args=(self._results,), name="streamsrv-results", daemon=True)
        t.start()
        self._restart_at = None

    def stop(self) -> None:
        proc = self.process
        if proc is None:
            return
        if self._stop is not None:
            self._stop.set()  # finishes the batch in flight
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
        self.process = None
        self.health.alive = False

    def restart_due(self, now: float) -> bool:
        """The watchdog's check: True once a dead process's back-off has passed; called with the lock held."""
        proc = self.process
        if proc is not None and proc.is_alive():
            return False
        if self._restart_at is None:
            code = proc.exitcode if proc is not None else None
            log.error("inference process exited (code %s); restarting", code)
            h = self.health
            h.alive = False
            h.model_loaded = False
            h.down_since = h.down_since or time.time()
            h.error = h.error or f"inference process exited (code {code})"
            self._restart_at = now + restart_delay(h.restarts, self.cfg.inference.restart_backoff_s)
            return False
        return now >= self._restart_at

    def restart(self, attach: list[AddCamera]) -> None:
        """Replace the process with a new one reading the rings in ``attach``; called with the lock held."""
        self.stop()
        self.health.restarts += 1
        self.start(attach)

    def _read_results(self, results: Queue[Any]) -> None:
        while not self._stopping.is_set():
            try:
                msg = results.get(timeout=RESULTS_POLL_S)
            except queue.Empty:
                if results is not self._results:
                    return  # a newer inference process has its own queue
                continue
            except (EOFError, OSError, ValueError):
                return
            if isinstance(msg, FrameResult):
                self._on_result(msg)
            elif isinstance(msg, InferenceStatus):
                self._on_status(msg)
            elif isinstance(msg, InferenceFailed):
                log.error("inference failed: %s", msg.error)
                self.health.error = msg.error

    def _on_status(self, msg: InferenceStatus) -> None:
        with self._lock:
            h = self.health
            h.model_loaded, h.backend, h.device, h.labels = True, msg.backend, msg.device, msg.labels
            h.results_dropped = msg.results_dropped
            h.heap = msg.heap
            h.error, h.down_since = None, None
            self._on_counters(msg.cameras)
