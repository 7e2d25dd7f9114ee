"""Background lanes: lossless, low-priority inputs to the shared inference loop (uploaded images, clip jobs).

Each lane has its own frame ring, attached to the inference process like a camera marked ``background``, so live
cameras always go first; its results go to the callback it was opened with, not to the cameras' subscribers.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from streamsrv.errors import LaneClosed
from streamsrv.ipc.frame_ring import FrameRing, RingClosed
from streamsrv.ipc.messages import AddCamera, RemoveCamera
from streamsrv.ipc.signals import FramesReady
from streamsrv.runtime.rings import lane_ring_name
from streamsrv.types import FrameResult

log = logging.getLogger(__name__)
ResultCallback = Callable[[FrameResult], None]
ControlSend = Callable[[AddCamera | RemoveCamera], None]

_LANE_POLL_S = 0.002


class Lane:
    """A lossless, low-priority input to the shared inference loop (uploaded images, clip jobs).

    ``submit`` waits for room in the lane's ring instead of dropping; results arrive, in order, at the
    callback given to ``open_lane``. Live cameras always go first.

    >>> lane = server.open_lane(on_result=print, track=False)  # doctest: +SKIP
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


class Lanes:
    """The open background lanes; thread-safe under the supervisor's lock.

    ``send`` hands attach and detach messages to the inference process (dropped while none runs: a new one is
    attached to every lane in ``attachments``).
    """

    def __init__(self, instance: str, frames_ready: FramesReady, lock: threading.RLock, send: ControlSend) -> None:
        self._instance = instance
        self._frames_ready = frames_ready
        self._lock = lock
        self._send = send
        self._lanes: dict[str, _LaneRuntime] = {}

    def open(
        self,
        on_result: ResultCallback,
        track: bool = True,
        detect_fps: float = 25.0,
        max_width: int = 3840,
        max_height: int = 2160,
    ) -> Lane:
        """A background input to the inference loop; ``on_result`` gets each frame's result in order."""
        lane_id = f"lane:{uuid.uuid4().hex[:12]}"  # ':' cannot appear in camera ids, so ids never clash
        ring = FrameRing.create(lane_ring_name(self._instance, lane_id), max_width, max_height)
        add = AddCamera(lane_id, str(ring.path), detect_fps, background=True, track=track)
        lane = Lane(lane_id, ring, self._frames_ready, self._close)
        with self._lock:
            self._lanes[lane_id] = _LaneRuntime(lane, on_result, add)
            self._send(add)
        return lane

    def attachments(self) -> list[AddCamera]:
        """What a new inference process must be told to read every open lane; called with the lock held."""
        return [rt.add for rt in self._lanes.values()]

    def deliver(self, result: FrameResult) -> bool:
        """Hand ``result`` to its lane's callback; False when it is no lane's (a camera's, or a closed lane's)."""
        with self._lock:
            rt = self._lanes.get(result.camera_id)
        if rt is None:
            return False
        try:
            rt.on_result(result)
        except Exception:
            log.exception("lane %s result callback failed", result.camera_id)
        return True

    def close_all(self) -> None:
        with self._lock:
            for rt in list(self._lanes.values()):
                rt.lane.close()

    def _close(self, lane_id: str) -> None:
        with self._lock:
            if self._lanes.pop(lane_id, None) is not None:
                self._send(RemoveCamera(lane_id))
