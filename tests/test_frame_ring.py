"""The shared-memory frame ring: latest-frame-wins hand-off across processes, torn-read detection."""

from __future__ import annotations

import multiprocessing as mp
import os
import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest

from streamsrv.ipc.frame_ring import NUM_SLOTS, FrameRing, RingClosed


@pytest.fixture
def ring() -> Iterator[FrameRing]:
    r = FrameRing.create(f"test-{os.getpid()}-ring", max_width=64, max_height=48)
    yield r
    r.close()
    r.unlink()


def _frame(value: int, w: int = 64, h: int = 48) -> np.ndarray:
    return np.full((h, w, 3), value % 256, np.uint8)


def test_reader_gets_only_the_newest_frame(ring: FrameRing) -> None:
    for i in range(1, 8):
        ring.write(_frame(i), frame_index=i * 5, wall_ts=100.0 + i, mono_ts=float(i), video_ts=i / 25)
    got = ring.read_latest(after_seq=0)
    assert got is not None
    ref, frame = got
    assert ref.seq == 7 and ref.frame_index == 35 and ref.wall_ts == 107.0 and ref.video_ts == 7 / 25
    assert (frame == 7).all()
    assert ring.read_latest(after_seq=7) is None  # nothing newer


def test_older_frames_are_readable_until_overwritten(ring: FrameRing) -> None:
    for i in range(1, 10):
        ring.write(_frame(i), frame_index=i, wall_ts=0.0, mono_ts=0.0, video_ts=0.0)
    assert ring.read_seq(9) is not None
    assert ring.read_seq(9 - NUM_SLOTS + 1) is not None
    assert ring.read_seq(9 - NUM_SLOTS) is None  # lapped


def test_frames_of_different_sizes_share_the_ring(ring: FrameRing) -> None:
    ring.write(_frame(1, 32, 16), frame_index=0, wall_ts=0.0, mono_ts=0.0, video_ts=0.0)
    got = ring.read_latest()
    assert got is not None and got[1].shape == (16, 32, 3) and got[0].width == 32
    with pytest.raises(ValueError, match="does not fit"):
        ring.write(_frame(1, 128, 96), frame_index=0, wall_ts=0.0, mono_ts=0.0, video_ts=0.0)


def test_a_slot_being_written_is_never_returned(ring: FrameRing) -> None:
    ring.write(_frame(1), frame_index=0, wall_ts=0.0, mono_ts=0.0, video_ts=0.0)
    # Simulate a writer that died mid-write: the slot's sequence number is invalidated first.
    slot = ring.latest_seq % NUM_SLOTS
    ring._slots[slot]["seq"] = -1
    assert ring.read_latest() is None


def _writer(path: str, n: int) -> None:
    r = FrameRing.attach(path, writable=True)
    for i in range(1, n + 1):
        r.write(_frame(i), frame_index=i, wall_ts=0.0, mono_ts=float(i), video_ts=0.0)
        r.add("decoded")
    r.close()


def test_frames_cross_a_process_boundary_without_pickling(ring: FrameRing) -> None:
    proc = mp.get_context("spawn").Process(target=_writer, args=(str(ring.path), 50))
    proc.start()
    proc.join(30)
    assert proc.exitcode == 0
    got = ring.read_latest()
    assert got is not None and got[0].seq == 50 and (got[1] == 50).all()
    assert ring.counter("decoded") == 50


def test_attach_rejects_a_foreign_file(tmp_path: object) -> None:
    path = f"/dev/shm/streamsrv-test-{os.getpid()}-foreign"
    with open(path, "wb") as f:
        f.write(b"\0" * 8192)
    try:
        with pytest.raises(ValueError, match="not a streamsrv frame ring"):
            FrameRing.attach(path)
    finally:
        os.unlink(path)


def _hammer(ring: FrameRing, write: bool, started: threading.Event, ended_by: list[BaseException | None]) -> None:
    """Write or read frames until the ring is closed under this thread."""
    frame = _frame(1, 1280, 720)
    try:
        while True:
            if write:
                ring.write(frame, frame_index=0, wall_ts=0.0, mono_ts=0.0, video_ts=0.0)
            elif ring.read_latest() is None and ring.closed:
                ended_by.append(None)
                return
            started.set()
    except BaseException as exc:  # the test reports whatever ended the thread
        ended_by.append(exc)


@pytest.mark.parametrize("write", [True, False], ids=["writer", "reader"])
def test_closing_while_another_thread_uses_the_ring(write: bool) -> None:
    """Deleting a camera or a job closes its ring while a preview reads or a job's feeder writes."""
    for attempt in range(40):
        ring = FrameRing.create(f"test-{os.getpid()}-closing", max_width=1280, max_height=720)
        if not write:
            ring.write(_frame(1, 1280, 720), frame_index=0, wall_ts=0.0, mono_ts=0.0, video_ts=0.0)
        started = threading.Event()
        ended_by: list[BaseException | None] = []
        user = threading.Thread(target=_hammer, args=(ring, write, started, ended_by))
        user.start()
        assert started.wait(10)
        time.sleep(attempt * 0.0002)  # land the close at different points of a copy
        ring.close()  # must not raise BufferError however the other thread's copy is placed
        ring.unlink()
        user.join(10)
        assert len(ended_by) == 1
        assert isinstance(ended_by[0], RingClosed) if write else ended_by[0] is None, ended_by
    assert ring.read_seq(1) is None
    with pytest.raises(RingClosed, match="closed"):
        ring.has_room()
    ring.close()  # idempotent
