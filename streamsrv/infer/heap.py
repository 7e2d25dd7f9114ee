"""Keeps the inference process's C heap from holding on to memory it no longer uses.

Torch allocates every activation of every forward pass with ``malloc``. glibc serves blocks of a few MB from mmap
at first, but each such block freed raises its mmap threshold, after which they come from the heap arenas; once
the arenas are fragmented, freed memory stays resident. The process then looks like it leaks (RSS grows for a
while, then levels off at a height that depends on the order of allocations), while the memory in use is flat.
``HeapKeeper`` reads glibc's own accounting (``mallinfo2``) and, when the free part grows past a bound, hands it
back with ``malloc_trim``, which also releases free pages inside arenas. A trim costs page faults when the memory
is reused, so it runs only past the bound and at most every ``min_interval_s``. Other C libraries: no stats, no
trims.

Example:
    >>> keeper = HeapKeeper(max_free_bytes=64 * 2**20, min_interval_s=10.0)
    >>> stats = keeper.tick()  # in the inference loop, about once a second
    >>> stats is None or stats.in_use_bytes > 0
    True
"""

from __future__ import annotations

import ctypes
import ctypes.util
import math
import os
import time

from streamsrv.ipc.messages import HeapStats

_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks")
    ] + [("keepcost", ctypes.c_size_t)]


def _glibc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        libc.mallinfo2.restype = _MallInfo2
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
    except (OSError, AttributeError, TypeError):  # not glibc >= 2.33
        return None
    return libc


def _rss_bytes() -> int:
    with open("/proc/self/statm", "rb") as f:
        return int(f.read().split()[1]) * _PAGE_BYTES


class HeapKeeper:
    """Trims the heap when more than ``max_free_bytes`` sits free in it, at most every ``min_interval_s``."""

    def __init__(self, max_free_bytes: int = 96 * 2**20, min_interval_s: float = 2.0) -> None:
        self.max_free_bytes = max_free_bytes
        self.min_interval_s = min_interval_s
        self._libc = _glibc()
        self._last_trim = -math.inf
        self._trims = 0
        self._trimmed = 0

    def tick(self, now: float | None = None) -> HeapStats | None:
        """Read the heap, trim it if due; None where glibc is not the C library."""
        if self._libc is None:
            return None
        now = time.monotonic() if now is None else now
        info = self._libc.mallinfo2()
        # fordblks keeps counting trimmed pages (they stay free chunks, only their backing goes), hence the interval
        if info.fordblks > self.max_free_bytes and now - self._last_trim >= self.min_interval_s:
            before = _rss_bytes()
            self._libc.malloc_trim(0)
            self._last_trim = now
            self._trims += 1
            self._trimmed += max(before - _rss_bytes(), 0)
            info = self._libc.mallinfo2()
        return HeapStats(
            in_use_bytes=int(info.uordblks) + int(info.hblkhd),
            free_bytes=int(info.fordblks),
            trims=self._trims,
            trimmed_bytes=self._trimmed,
        )
