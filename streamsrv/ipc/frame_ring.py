"""A per-camera ring of frame slots in shared memory: latest-frame-wins without pickling pixels.

One decoder writes; any number of readers (the inference process, preview in the main process)
read the newest frame. Each slot carries a sequence number written last (a seqlock): a reader
checks it before and after copying, so a slot overwritten mid-copy is detected and skipped. With
``NUM_SLOTS`` slots the writer must lap the ring during one copy to tear it, which cannot happen
at camera frame rates.

The file lives in /dev/shm and is sized for the largest frame, but tmpfs only allocates the pages
that are written, so a 360p camera costs 360p of memory. Counters the decoder maintains (decoded,
skipped, reconnects, heartbeat) live in the header so stats need no messages.

Example:
    >>> ring = FrameRing.create("doctest-cam", max_width=64, max_height=48)
    >>> ring.write(np.zeros((48, 64, 3), np.uint8), frame_index=0, wall_ts=1.7e9, mono_ts=1.0, video_ts=0.0)
    1
    >>> ring.read_latest(after_seq=0)[0].seq
    1
    >>> ring.close(); ring.unlink()
"""

from __future__ import annotations

import mmap
import os
import re
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from streamsrv.types import FrameRef, MotionBox

SHM_DIR = Path("/dev/shm")
NUM_SLOTS = 4
_MAGIC = 0x5354524D  # "STRM"

# Header counters, one int64/float64 each. Indices are part of the file format.
_COUNTERS = (
    "magic",
    "num_slots",
    "slot_bytes",
    "latest_seq",  # newest complete frame handed on (0: none yet)
    "decoded",  # frames decoded from the source
    "skipped",  # decoded frames not handed on because of detect_fps
    "reconnects",
    "heartbeat_mono",  # time.monotonic() of the decoder's last sign of life (float bits)
    "last_frame_mono",  # time.monotonic() of the last decoded frame (float bits)
    "packets",  # packets received from the source
    "consumed_seq",  # lossless lanes: the newest frame the consumer has taken (the producer waits on it)
    "dropped_behind",  # packets not decoded: the decoder fell behind real time and skipped to a keyframe
    "skipped_no_motion",  # due frames not handed on: no motion and the camera's motion.max_interval_s not yet up
    "fps_limit",  # the detect_fps the decoder paces to while the server degrades the camera (float bits; 0: none)
)
_H = {name: i for i, name in enumerate(_COUNTERS)}
_HEADER_BYTES = 256
# Motion boxes a slot carries with its frame; more are folded into the last one (see ``fold_boxes``).
MAX_MOTION_BOXES = 16
_SLOT_DTYPE = np.dtype(
    [
        ("seq", "<i8"),
        ("width", "<i8"),
        ("height", "<i8"),
        ("frame_index", "<i8"),
        ("wall_ts", "<f8"),
        ("mono_ts", "<f8"),
        ("video_ts", "<f8"),
        ("n_motion", "<i8"),
        ("motion", "<f4", (MAX_MOTION_BOXES, 4)),
    ]
)
_SLOT_HEADER_BYTES = _SLOT_DTYPE.itemsize * NUM_SLOTS
_DATA_OFFSET = 4096  # page-aligned frame data


def fold_boxes(boxes: Sequence[MotionBox], limit: int = MAX_MOTION_BOXES) -> list[MotionBox]:
    """At most ``limit`` boxes: the largest ``limit - 1`` and one around all the rest, so no motion goes unshown.

    >>> fold_boxes([(0, 0, 0.5, 0.5), (0.6, 0.6, 0.7, 0.7), (0.8, 0.1, 0.9, 0.2)], limit=2)
    [(0, 0, 0.5, 0.5), (0.6, 0.1, 0.9, 0.7)]
    """
    if len(boxes) <= limit:
        return list(boxes)
    by_area = sorted(boxes, key=lambda b: (b[2] - b[0]) * (b[3] - b[1]), reverse=True)
    kept, rest = by_area[: limit - 1], by_area[limit - 1 :]
    around = (min(b[0] for b in rest), min(b[1] for b in rest), max(b[2] for b in rest), max(b[3] for b in rest))
    return [*kept, around]


def ring_path(name: str) -> Path:
    """The /dev/shm file for a ring name; names are sanitised so any camera id is safe."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", name)
    return SHM_DIR / f"streamsrv-{safe}"


class RingClosed(RuntimeError):
    """The ring was closed in this process; it takes no more frames."""


class FrameRing:
    """Shared-memory frame slots with a seqlock; see the module docstring.

    Within one process it is thread-safe to close a ring while other threads read or write frames:
    an mmap cannot close while a copy holds a view of it (BufferError), so frame copies and ``close``
    share a lock. After ``close`` reads find no frame and writes raise RingClosed.
    """

    def __init__(self, path: Path, mm: mmap.mmap, writable: bool) -> None:
        self.path = path
        self._mm = mm
        self.writable = writable
        self._lock = threading.Lock()
        self.closed = False
        self._ints = np.frombuffer(mm, dtype="<i8", count=len(_COUNTERS), offset=0)
        self._floats = np.frombuffer(mm, dtype="<f8", count=len(_COUNTERS), offset=0)
        self._slots = np.frombuffer(mm, dtype=_SLOT_DTYPE, count=NUM_SLOTS, offset=_HEADER_BYTES)
        self.slot_bytes = int(self._ints[_H["slot_bytes"]])
        self._data = np.frombuffer(mm, dtype=np.uint8, count=self.slot_bytes * NUM_SLOTS, offset=_DATA_OFFSET)

    @classmethod
    def create(cls, name: str, max_width: int, max_height: int) -> FrameRing:
        """Create (or reset) the ring file for ``name``, sized for ``max_width`` x ``max_height`` BGR."""
        path = ring_path(name)
        slot_bytes = max_width * max_height * 3
        size = _DATA_OFFSET + slot_bytes * NUM_SLOTS
        assert _HEADER_BYTES + _SLOT_HEADER_BYTES <= _DATA_OFFSET
        fd = os.open(path, os.O_CREAT | os.O_RDWR | os.O_TRUNC, 0o600)
        try:
            os.ftruncate(fd, size)  # sparse: tmpfs allocates pages only when written
            mm = mmap.mmap(fd, size)
        finally:
            os.close(fd)
        ints = np.frombuffer(mm, dtype="<i8", count=len(_COUNTERS))
        ints[_H["num_slots"]] = NUM_SLOTS
        ints[_H["slot_bytes"]] = slot_bytes
        ints[_H["magic"]] = _MAGIC
        del ints
        return cls(path, mm, writable=True)

    @classmethod
    def attach(cls, path: str | Path, writable: bool = False) -> FrameRing:
        """Map an existing ring file; raises FileNotFoundError if it is gone."""
        p = Path(path)
        fd = os.open(p, os.O_RDWR if writable else os.O_RDONLY)
        try:
            size = os.fstat(fd).st_size
            mm = mmap.mmap(fd, size, access=mmap.ACCESS_WRITE if writable else mmap.ACCESS_READ)
        finally:
            os.close(fd)
        magic, num_slots = (int(v) for v in np.frombuffer(mm, dtype="<i8", count=2))
        if magic != _MAGIC or num_slots != NUM_SLOTS:
            mm.close()
            raise ValueError(f"{p} is not a streamsrv frame ring")
        return cls(p, mm, writable)

    # -- writer side (the decoder) -------------------------------------------------------
    def write(
        self,
        frame: npt.NDArray[np.uint8],
        *,
        frame_index: int,
        wall_ts: float,
        mono_ts: float,
        video_ts: float,
        motion: Sequence[MotionBox] = (),
    ) -> int:
        """Publish a BGR frame as the newest; returns its sequence number. The clocks and ``motion`` are
        ``FrameRef``'s (more than ``MAX_MOTION_BOXES`` boxes are folded)."""
        boxes = fold_boxes(motion)
        h, w = frame.shape[:2]
        nbytes = h * w * 3
        if nbytes > self.slot_bytes:
            raise ValueError(f"frame {w}x{h} does not fit a slot of {self.slot_bytes} bytes")
        with self._lock:
            self._check_open()
            seq = int(self._ints[_H["latest_seq"]]) + 1
            slot = seq % NUM_SLOTS
            header = self._slots[slot]
            header["seq"] = -1  # readers see the slot as being written
            start = slot * self.slot_bytes
            self._data[start : start + nbytes] = frame.reshape(-1)
            header["width"], header["height"], header["frame_index"] = w, h, frame_index
            header["wall_ts"], header["mono_ts"], header["video_ts"] = wall_ts, mono_ts, video_ts
            header["n_motion"] = len(boxes)
            if boxes:
                header["motion"][: len(boxes)] = boxes
            header["seq"] = seq
            self._ints[_H["latest_seq"]] = seq
            del header  # a view of the mmap: it must not outlive the lock
        return seq

    def has_room(self) -> bool:
        """Lossless use: True when writing one more frame cannot overwrite one not yet consumed."""
        with self._lock:
            self._check_open()
            return self.latest_seq - int(self._ints[_H["consumed_seq"]]) < NUM_SLOTS - 1

    def add(self, counter: str, n: int = 1) -> None:
        self._ints[_H[counter]] += n

    def set_time(self, counter: str, value: float) -> None:
        self._floats[_H[counter]] = value

    def set_int(self, counter: str, value: int) -> None:
        self._ints[_H[counter]] = value

    # -- reader side ---------------------------------------------------------------------
    def counter(self, name: str) -> int:
        return int(self._ints[_H[name]])

    def time_value(self, name: str) -> float:
        return float(self._floats[_H[name]])

    @property
    def latest_seq(self) -> int:
        return int(self._ints[_H["latest_seq"]])

    def latest_mono_ts(self) -> float:
        """When the newest handed-on frame was decoded (``time.monotonic()``, comparable across processes)."""
        return float(self._slots[self.latest_seq % NUM_SLOTS]["mono_ts"])

    def read_latest(self, after_seq: int = 0, camera_id: str = "") -> tuple[FrameRef, npt.NDArray[np.uint8]] | None:
        """Copy out the newest frame if it is newer than ``after_seq``; None if none, torn or closed."""
        with self._lock:
            if self.closed:
                return None
            seq = self.latest_seq
            return self._copy_out(seq, camera_id) if seq > after_seq else None

    def read_seq(self, seq: int, camera_id: str = "") -> tuple[FrameRef, npt.NDArray[np.uint8]] | None:
        """Copy out frame ``seq`` if the ring still holds it intact (the last ``NUM_SLOTS`` frames)."""
        with self._lock:
            return None if self.closed else self._copy_out(seq, camera_id)

    def _copy_out(self, seq: int, camera_id: str) -> tuple[FrameRef, npt.NDArray[np.uint8]] | None:
        if seq <= 0:
            return None
        slot = seq % NUM_SLOTS
        meta = self._slots[slot].copy()
        if int(meta["seq"]) != seq:
            return None
        w, h = int(meta["width"]), int(meta["height"])
        start = slot * self.slot_bytes
        frame = self._data[start : start + w * h * 3].reshape(h, w, 3).copy()
        if int(self._slots[slot]["seq"]) != seq:  # overwritten while copying
            return None
        ref = FrameRef(
            camera_id=camera_id,
            seq=seq,
            frame_index=int(meta["frame_index"]),
            width=w,
            height=h,
            wall_ts=float(meta["wall_ts"]),
            mono_ts=float(meta["mono_ts"]),
            video_ts=float(meta["video_ts"]),
            motion=tuple(
                (round(float(x1), 4), round(float(y1), 4), round(float(x2), 4), round(float(y2), 4))
                for x1, y1, x2, y2 in meta["motion"][: int(meta["n_motion"])]
            ),
        )
        return ref, frame

    def seconds_since_heartbeat(self) -> float:
        return time.monotonic() - self.time_value("heartbeat_mono")

    # -- life cycle ----------------------------------------------------------------------
    def close(self) -> None:
        """Unmap the ring in this process (idempotent); waits for a frame copy in progress."""
        with self._lock:
            if self.closed:
                return
            self.closed = True
            # numpy views must go before the mmap can close
            del self._ints, self._floats, self._slots, self._data
            self._mm.close()

    def _check_open(self) -> None:
        if self.closed:
            raise RingClosed(f"frame ring {self.path} is closed")

    def unlink(self) -> None:
        self.path.unlink(missing_ok=True)
