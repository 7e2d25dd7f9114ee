"""The real app under uvicorn on a thread of the test process, for tests that need it on a real socket.

Example:
    >>> with serve_in_thread(create_app(cfg, server=FakeServer(cfg))) as url:  # doctest: +SKIP
    ...     httpx.get(f"{url}/healthz")
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import uvicorn
from starlette.types import ASGIApp

from tests.support.processes import free_port
from tests.support.waiting import wait_for


@contextlib.contextmanager
def serve_in_thread(app: ASGIApp) -> Iterator[str]:
    """Serve ``app`` on a free loopback port; yields its base URL, and stops it (checking that it stopped) after."""
    port = free_port()
    web = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, timeout_graceful_shutdown=5))
    thread = threading.Thread(target=web.run, name="uvicorn", daemon=True)
    thread.start()
    try:
        wait_for(lambda: web.started, 60, "uvicorn to start")
        yield f"http://127.0.0.1:{port}"
    finally:
        web.should_exit = True
        thread.join(60)
    assert not thread.is_alive(), "uvicorn did not stop"
