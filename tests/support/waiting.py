"""The one polling helper for tests that watch a live system change state."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx

from tests.support.processes import ManagedProcess


def wait_for(
    predicate: Callable[[], bool],
    timeout_s: float,
    what: str,
    server: ManagedProcess | None = None,
    *,
    interval_s: float = 0.2,
) -> None:
    """Poll ``predicate`` until it holds; fail naming ``what`` (and ``server``'s last output) after ``timeout_s``.

    A predicate that asks a server over HTTP may find it not listening yet, or restarting: a transport error
    counts as "not yet".
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except httpx.TransportError:
            pass
        time.sleep(interval_s)
    tail = f"\n{type(server).__name__} output:\n{server.output()}" if server is not None else ""
    raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}{tail}")
