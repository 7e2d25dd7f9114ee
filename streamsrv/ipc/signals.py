"""Lock-free signals between processes that may be SIGKILLed at any instant.

``multiprocessing.Event`` and ``Queue`` take internal locks; a process killed while holding one
would block every other camera forever. A ``StopFlag`` is a shared byte, and ``FramesReady`` is a
POSIX semaphore whose post is one atomic call, so a killed decoder can never wedge the others.
"""

from __future__ import annotations

import ctypes
from multiprocessing.context import SpawnContext
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Semaphore
from typing import cast


class StopFlag:
    """A shared boolean set by the supervisor and polled by a worker process."""

    def __init__(self, ctx: SpawnContext) -> None:
        self._value = cast("Synchronized[bool]", ctx.RawValue(ctypes.c_bool, False))

    def set(self) -> None:
        self._value.value = True

    def is_set(self) -> bool:
        return bool(self._value.value)


class FramesReady:
    """Wakes the inference loop when any decoder publishes a frame."""

    def __init__(self, ctx: SpawnContext) -> None:
        self._sem: Semaphore = ctx.Semaphore(0)

    def notify(self) -> None:
        self._sem.release()

    def wait(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for a notification, then absorb any others already pending."""
        got = self._sem.acquire(timeout=max(0.0, timeout_s))
        while self._sem.acquire(block=False):
            pass
        return got


def exit_with_parent() -> None:
    """Ask Linux to SIGTERM this process when its parent dies, so no worker outlives a crashed server."""
    import ctypes.util
    import signal

    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return
    pr_set_pdeathsig = 1
    ctypes.CDLL(libc_name, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
