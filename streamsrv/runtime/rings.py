"""Names of the shared-memory frame rings in /dev/shm, and the sweep of rings that dead instances left behind.

Every ring's name starts with its instance (the server's pid unless named), so a restarted server can tell its own
rings from another live instance's and remove those of instances that died without cleaning up.
"""

from __future__ import annotations

import os
import re
import uuid
from pathlib import Path

from streamsrv.ipc.frame_ring import SHM_DIR, ring_path

_INCARNATION_HEX = 8
_INCARNATION = re.compile(rf"-[0-9a-f]{{{_INCARNATION_HEX}}}$")


def camera_ring_name(instance: str, camera_id: str) -> str:
    """A new ring name for a camera's decoder of ``instance``.

    One ring per decoder incarnation: a replaced camera's old decoder may still be stopping, its ring with it.
    """
    return f"{instance}-{camera_id}-{uuid.uuid4().hex[:_INCARNATION_HEX]}"


def lane_ring_name(instance: str, lane_id: str) -> str:
    """The ring name of a background lane of ``instance``."""
    return f"{instance}-{lane_id}"


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
