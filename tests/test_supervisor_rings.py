"""Camera ring names: one per decoder incarnation, and the camera read back from the /dev/shm file name."""

from __future__ import annotations

from streamsrv.ipc.frame_ring import ring_path
from streamsrv.runtime.rings import camera_ring_name, ring_camera_id


def test_each_incarnation_gets_its_own_ring_and_names_its_camera() -> None:
    first, second = camera_ring_name("4242", "north-gate-2"), camera_ring_name("4242", "north-gate-2")
    assert first != second
    for name in (first, second):
        assert ring_camera_id(ring_path(name).name, "4242") == "north-gate-2"


def test_rings_that_are_not_this_instances_cameras_name_none() -> None:
    assert ring_camera_id(ring_path(camera_ring_name("4242", "door")).name, "424") is None
    assert ring_camera_id(ring_path(camera_ring_name("4242", "door")).name, "1") is None
    assert ring_camera_id(ring_path("4242-lane:0123456789ab").name, "4242") is None  # an upload lane
    assert ring_camera_id("libtorch_cpu.so", "4242") is None
