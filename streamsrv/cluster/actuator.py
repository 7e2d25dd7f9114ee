"""Starts, stops and changes the cameras this node runs, on a thread of its own (a decoder start takes a while;
lease renewals must not wait for it).

A camera started under a lease continues the camera's event sequence from what Redis holds (``seq_key``), or
from what this node numbered itself if that is higher (Redis restarted without persistence); its events' run_id
names the fencing token and node (``t<token>.<node id>``).

Example:
    >>> actuator = CameraActuator(server, client, "gpu-0", owns, release, flush); actuator.start()  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

import redis

from streamsrv.cluster.keys import seq_key
from streamsrv.cluster.leases import Lease
from streamsrv.config.models import CameraConfig
from streamsrv.config.rules import resolve_rules
from streamsrv.errors import NotFoundError
from streamsrv.runtime.server import StreamServer

log = logging.getLogger(__name__)
_LIVE_FIELDS = {"name", "rules"}  # applied without restarting the decoder (as the single-server registry does)
_FLUSH_S = 2.0


class CameraActuator:
    """Applies the reconciler's decisions to the local ``StreamServer``, in order, one at a time."""

    def __init__(
        self,
        server: StreamServer,
        client: redis.Redis,
        node_id: str,
        owns: Callable[[str, int], bool],
        release: Callable[[Lease], None],
        flush: Callable[[float], bool],
    ) -> None:
        self.server, self.client, self.node_id = server, client, node_id
        self._owns, self._release, self._flush = owns, release, flush
        self._jobs: queue.Queue[Callable[[], None] | None] = queue.Queue()
        self._lock = threading.Lock()
        self._running: dict[str, CameraConfig] = {}
        self._seq_floor: dict[str, int] = {}  # camera -> last seq this node numbered
        self._thread = threading.Thread(target=self._run, name="cluster-cameras", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._jobs.put(None)
        self._thread.join(timeout=30)

    def running(self) -> list[str]:
        with self._lock:
            return sorted(self._running)

    # -- what the reconciler asks (queued) -----------------------------------------------------------------------
    def start_camera(self, cam: CameraConfig, token: int, run_id: str) -> None:
        self._jobs.put(lambda: self._start(cam, token, run_id))

    def stop_camera(self, camera_id: str, release: Lease | None) -> None:
        self._jobs.put(lambda: self._stop(camera_id, release))

    def apply(self, cam: CameraConfig) -> None:
        with self._lock:
            same = self._running.get(cam.id, cam) == cam
        if not same:
            self._jobs.put(lambda: self._apply(cam))

    def stop_all_now(self) -> None:
        """Stop every camera at once, in parallel, on the caller's threads (at shutdown, after ``stop``)."""
        threads = [threading.Thread(target=self._stop, args=(c, None)) for c in self.running()]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    # -- the work ------------------------------------------------------------------------------------------------
    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            try:
                job()
            except Exception:  # one camera's failure must not stop the others' starts and stops
                log.exception("cluster: a camera change failed")

    def _start(self, cam: CameraConfig, token: int, run_id: str) -> None:
        if not self._owns(cam.id, token):
            return  # lost again before it could start
        with self._lock:
            if cam.id in self._running:
                return
        stored = self.client.get(seq_key(cam.id))
        first_seq = max(int(stored or 0), self._seq_floor.get(cam.id, 0)) + 1
        self.server.add_camera(cam, run_id=run_id, first_seq=first_seq)
        with self._lock:
            self._running[cam.id] = cam
        log.info("cluster: camera %s started (run %s, events from seq %d)", cam.id, run_id, first_seq)

    def _stop(self, camera_id: str, release: Lease | None) -> None:
        with self._lock:
            running = self._running.pop(camera_id, None) is not None
        if running:
            try:
                self._seq_floor[camera_id] = self.server.next_event_seq(camera_id) - 1
                self.server.remove_camera(camera_id)
            except NotFoundError:
                pass
        if release is not None:
            self._flush(_FLUSH_S)  # its last events (camera.offline) go out under the lease
            self._release(release)

    def _apply(self, cam: CameraConfig) -> None:
        with self._lock:
            old = self._running.get(cam.id)
        if old is None or old == cam:
            return
        if old.model_dump(exclude=_LIVE_FIELDS) != cam.model_dump(exclude=_LIVE_FIELDS):
            self.server.replace_camera(cam)
        else:
            if old.rules != cam.rules:
                self.server.update_rules(cam.id, resolve_rules(cam.rules, self.server.cfg.base_dir, cam.id))
            self.server.cfg.cameras = [cam if c.id == cam.id else c for c in self.server.cfg.cameras]
        with self._lock:
            self._running[cam.id] = cam
        log.info("cluster: camera %s changed", cam.id)
