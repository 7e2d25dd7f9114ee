"""Real helper servers for tests, each a child process controlled strictly by its PID.

Tests kill and restart these servers to exercise reconnects, so every server keeps its port across restarts.
"""

from __future__ import annotations

import collections
import getpass
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

RTSP_SERVER_SCRIPT = Path(__file__).with_name("rtsp_server.py")
# PyGObject (`gi`) is Debian's python3-gi and only importable by Debian's interpreter, never from the virtualenv.
SYSTEM_PYTHON = "/usr/bin/python3"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


class ManagedProcess:
    """A child process started from `argv`, ready when it prints a line containing `ready_line` or accepts TCP
    connections on `ready_port`.

    stdout and stderr are merged and drained by a thread (a full pipe would stall the child); the last lines are kept
    for error messages. The process runs in its own session so a Ctrl-C aimed at pytest does not kill it behind the
    fixture's back.
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        ready_line: str | None = None,
        ready_port: int | None = None,
        env: Mapping[str, str] | None = None,
        startup_timeout: float = 15.0,
        history_lines: int = 50,
    ) -> None:
        if (ready_line is None) == (ready_port is None):
            raise ValueError("give exactly one of ready_line or ready_port")
        self.argv = list(argv)
        self.ready_line = ready_line
        self.ready_port = ready_port
        self.env = dict(env) if env is not None else None
        self.startup_timeout = startup_timeout
        self._proc: subprocess.Popen[str] | None = None
        self._output: collections.deque[str] = collections.deque(maxlen=history_lines)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def returncode(self) -> int | None:
        """The exit status once the process ended, else None."""
        return self._proc.poll() if self._proc is not None else None

    def output(self) -> str:
        """The process's last lines of output, for diagnostics."""
        return "".join(self._output)

    def start(self) -> None:
        if self.running:
            raise RuntimeError(f"{self.argv[0]} is already running (pid {self.pid})")
        self._output.clear()
        # A fresh event per run: the previous run's drain thread may still be reading its last lines.
        ready = threading.Event()
        self._proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=self.env,
            start_new_session=True,
        )
        threading.Thread(target=self._drain, args=(self._proc, ready), daemon=True).start()
        try:
            self._wait_ready(ready)
        except BaseException:
            self.kill()
            raise

    def _drain(self, proc: subprocess.Popen[str], ready: threading.Event) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self._output.append(line)
            if self.ready_line is not None and self.ready_line in line:
                ready.set()

    def _wait_ready(self, ready: threading.Event) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            # Exit first: a port answering for a child that already died belongs to someone else.
            if self._proc.poll() is not None:
                raise RuntimeError(
                    f"{self.argv} exited with status {self._proc.returncode} before it was ready:\n{self.output()}"
                )
            if ready.wait(0.05) or (self.ready_port is not None and port_open(self.ready_port)):
                return
        raise TimeoutError(f"{self.argv} not ready after {self.startup_timeout} s:\n{self.output()}")

    def kill(self) -> None:
        """SIGKILL, as a crash or power cut would: no chance to close connections cleanly."""
        self._signal_and_wait(signal.SIGKILL, timeout=5.0)

    def stop(self, timeout: float = 5.0) -> None:
        """Terminate politely, escalating to SIGKILL after `timeout` seconds."""
        try:
            self._signal_and_wait(signal.SIGTERM, timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def restart(self) -> None:
        self.stop()
        self.start()

    def _signal_and_wait(self, signum: int, timeout: float) -> None:
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        os.kill(proc.pid, signum)
        proc.wait(timeout)
        # The child is reaped, so its PID cannot have been reused when we signalled it above.

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class RtspServer(ManagedProcess):
    """tests/support/rtsp_server.py serving loop mounts (name -> clip) and synthetic mounts (name -> "WxH@FPS")."""

    def __init__(
        self,
        mounts: Mapping[str, Path] | None = None,
        synthetic: Mapping[str, str] | None = None,
        port: int | None = None,
    ) -> None:
        self.port = port if port is not None else free_port()
        argv = [SYSTEM_PYTHON, str(RTSP_SERVER_SCRIPT), "--port", str(self.port)]
        for name, clip in (mounts or {}).items():
            argv += ["--mount", f"{name}={clip}"]
        for name, spec in (synthetic or {}).items():
            argv += ["--synthetic", f"{name}={spec}"]
        super().__init__(argv, ready_line="READY ")

    def url(self, mount: str) -> str:
        return f"rtsp://127.0.0.1:{self.port}/{mount}"


# The conftest `rtsp_server_factory` fixture: (mounts=None, synthetic=None, port=None) -> a started RtspServer.
RtspServerFactory = Callable[..., RtspServer]


class RedisServer(ManagedProcess):
    """A throwaway redis-server: no persistence, loopback only."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port if port is not None else free_port()
        argv = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        # The log line rather than the port: a probe connection could reach another process that took the port.
        super().__init__(argv, ready_line="Ready to accept connections")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


class TurnServer(ManagedProcess):
    """A throwaway coturn TURN server on 127.0.0.1 (UDP and TCP), with one long-term user, relaying on loopback."""

    USER, PASSWORD, REALM = "viewer", "turn-pass-31", "streamsrv.test"

    def __init__(self, port: int | None = None) -> None:
        self.port = port if port is not None else free_port()
        relay_low = 49152 + self.port % 8000  # a range of its own per server, clear of other tests' ports
        argv = [
            # coturn logs to stdout through stdio, which a pipe makes block-buffered: without line buffering its
            # log lines arrive kilobytes late, or only at exit, and a test reading them finds nothing.
            "stdbuf",
            "-oL",
            "turnserver",
            "--listening-ip=127.0.0.1",
            "--relay-ip=127.0.0.1",
            f"--listening-port={self.port}",
            f"--min-port={relay_low}",
            f"--max-port={relay_low + 200}",
            "--allow-loopback-peers",  # the peers here are the browser and the server, both on loopback
            "--lt-cred-mech",
            f"--user={self.USER}:{self.PASSWORD}",
            f"--realm={self.REALM}",
            "--no-tls",
            "--no-dtls",
            "--no-cli",
            "--log-file=stdout",
            "--simple-log",
            "--verbose",
        ]
        # --verbose says ~55 lines at startup alone; keep enough that a test sees the allocations it caused.
        super().__init__(argv, ready_port=self.port, history_lines=2000)

    @property
    def url(self) -> str:
        return f"turn:127.0.0.1:{self.port}?transport=udp"


class MosquittoBroker(ManagedProcess):
    """A throwaway Mosquitto MQTT broker on 127.0.0.1, anonymous, keeping sessions and queued QoS 1 messages in
    ``data_dir`` across restarts (saved when it stops)."""

    def __init__(self, data_dir: Path, port: int | None = None) -> None:
        self.port = port if port is not None else free_port()
        data_dir.mkdir(parents=True, exist_ok=True)
        conf = data_dir / "mosquitto.conf"
        conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
            f"persistence_location {data_dir}/\nlog_dest stdout\n"
            # Started as root, mosquitto would switch to the user mosquitto, who cannot write data_dir.
            f"user {getpass.getuser()}\n"
        )
        super().__init__(["mosquitto", "-c", str(conf)], ready_port=self.port)

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"
