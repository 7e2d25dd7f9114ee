"""The real server for end-to-end tests: ``streamsrv serve`` as a child process on a free port, driven over HTTP.

Its whole output is kept (not just the last lines) so tests can check what it logged. It is stopped by PID
(SIGTERM, then SIGKILL) like every helper server; its decoder and inference processes exit with it. Tests get
servers from the ``app_factory`` / ``module_app_factory`` fixtures of tests/e2e/conftest.py (an ``AppServers``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Mapping
from pathlib import Path

import httpx
import psutil

from tests.support.processes import ManagedProcess, free_port
from tests.support.waiting import wait_for

READY_TIMEOUT_S = 120.0  # loading the model on a busy 2-core machine
STOP_TIMEOUT_S = 30.0  # a graceful stop flushes events and joins the decoders; SIGKILL only after this
IDLE_CONNECTION_S = 2.0  # under uvicorn's 5 s keep-alive, so the server never closes a connection as it is reused


class AppServer(ManagedProcess):
    """``streamsrv serve --config CONFIG`` on 127.0.0.1; ready once it listens (model loading goes on after)."""

    def __init__(self, config: Path, env: Mapping[str, str] | None = None, port: int | None = None) -> None:
        self.port = port if port is not None else free_port()
        self.config = config
        argv = [sys.executable, "-m", "streamsrv.cli", "serve", "--config", str(config), "--port", str(self.port)]
        super().__init__(argv, ready_port=self.port, env={**os.environ, **(env or {})}, startup_timeout=60.0)
        self._lines: list[str] = []
        self._lines_lock = threading.Lock()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self, api_key: str | None = None, timeout_s: float = 30.0) -> httpx.Client:
        """A client for the server. It drops idle connections after 2 s: uvicorn closes them after 5 s, and a client
        that reuses one just then reads a reset (the soak, sampling every 5 s, hit that in CI)."""
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        limits = httpx.Limits(keepalive_expiry=IDLE_CONNECTION_S)
        return httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout_s, limits=limits)

    def log(self) -> str:
        """Everything the server printed so far, all runs."""
        with self._lines_lock:
            return "".join(self._lines)

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Until ``/readyz`` says the model is loaded and every camera started."""
        with self.client() as http:
            wait_for(lambda: http.get("/readyz").status_code == 200, timeout_s, f"{self.base_url}/readyz", self)

    def child_pids(self) -> set[int]:
        """PIDs of the server's child processes (inference, decoders, multiprocessing helpers)."""
        if self.pid is None:
            return set()
        try:
            return {p.pid for p in psutil.Process(self.pid).children(recursive=True)}
        except psutil.NoSuchProcess:
            return set()

    def _drain(self, proc: subprocess.Popen[str], ready: threading.Event) -> None:
        # ManagedProcess keeps only the last lines; log checks need all of them.
        assert proc.stdout is not None
        for line in proc.stdout:
            self._output.append(line)
            with self._lines_lock:
                self._lines.append(line)


def model_section(model: Path, capacity: str = "{admission: false, degrade: false}") -> str:
    """The config lines for the shared person model on one CPU thread (the machine is shared), and ``capacity``.

    Admission control and overload degradation are off unless a test sets ``capacity`` itself: on a shared machine
    its load would decide whether a camera added through the API fits, and at what rate the cameras run
    (tests/e2e/test_capacity_e2e.py tests both with budgets and loads set so that no load changes the outcome).
    """
    return (
        f'model: {{path: "{model}", labels: {{Normal: person, Fall: person}}}}\n'
        "inference: {threads: 1, max_batch: 4, stale_after_s: 5}\n"
        f"capacity: {capacity}\n"
    )


class AppServers:
    """Starts ``streamsrv serve`` processes, each from its own config; ``close`` stops every one still running."""

    def __init__(self, workdir: Path) -> None:
        self._workdir = workdir
        self._servers: list[AppServer] = []

    def __call__(self, config: str | Path, *, env: Mapping[str, str] | None = None, ready: bool = True) -> AppServer:
        """A started server for ``config`` (YAML text, written to a fresh folder, or a file that exists already).

        ``ready`` waits for ``/readyz`` (model loaded, cameras started); without it the server only listens.
        """
        if isinstance(config, str):
            folder = self._workdir / f"app{len(self._servers)}"
            folder.mkdir()
            (folder / "streamsrv.yaml").write_text(config)
            config = folder / "streamsrv.yaml"
        server = AppServer(config, env=env)
        self._servers.append(server)
        server.start()
        if ready:
            server.wait_ready()
        return server

    def close(self) -> None:
        for server in reversed(self._servers):
            server.stop(timeout=STOP_TIMEOUT_S)
