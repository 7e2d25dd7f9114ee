"""Fake cameras for tests: servers that misbehave the way real cameras do, in-process on 127.0.0.1."""

from __future__ import annotations

import contextlib
import functools
import io
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import av

TS_PACKET = 188


class SilentServer:
    """A TCP server that accepts every connection and never sends a byte (a camera wedged after accept)."""

    def __init__(self, port: int = 0) -> None:
        self._listener = socket.create_server(("127.0.0.1", port))
        self.port: int = self._listener.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, name="silent-server", daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return  # closed
            self.accepted.append(conn)

    def close(self) -> None:
        # shutdown() wakes the blocked accept(); close() alone leaves the thread (and the port) held.
        self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self._thread.join(5)
        for conn in self.accepted:
            conn.close()


def mpegts(clip: Path, seconds: float | None = None, offset_s: float = 0.0) -> bytes:
    """The clip's first ``seconds`` remuxed (not re-encoded) to MPEG-TS, timestamps shifted by ``offset_s``.

    Each result carries its own SPS/PPS in-band, so two of them concatenated are a valid stream that changes
    resolution at the join.
    """
    out = io.BytesIO()
    with av.open(str(clip)) as src, av.open(out, "w", format="mpegts") as dst:
        video = src.streams.video[0]
        stream = dst.add_stream_from_template(video)
        for packet in src.demux(video):
            if packet.dts is None:
                continue
            assert packet.time_base is not None and packet.pts is not None
            if seconds is not None and packet.pts * packet.time_base >= seconds:
                break
            shift = int(offset_s / packet.time_base)
            packet.pts += shift
            packet.dts += shift
            packet.stream = stream
            dst.mux(packet)
    return out.getvalue()


@dataclass(frozen=True)
class Segment:
    """Bytes sent at a live pace (``len(data) / seconds`` bytes/s); ``data=None`` is random bytes, forever."""

    data: bytes | None
    seconds: float


Script = Callable[[int], list[Segment]]  # connection number (from 0) -> what that connection gets


class HttpTsCamera:
    """An HTTP camera streaming MPEG-TS like a live encoder; connection ``n`` plays ``script(n)``, then closes."""

    CHUNK = TS_PACKET * 32

    def __init__(self, script: Script) -> None:
        self.script = script
        self.connections = 0
        self._stop = threading.Event()
        camera = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                n = camera.connections
                camera.connections += 1
                self.send_response(200)
                self.send_header("Content-Type", "video/mp2t")
                self.end_headers()
                with contextlib.suppress(OSError):  # the client went away (reconnecting), as it may
                    camera._play(self.wfile, camera.script(n))

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="http-ts-camera", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/live.ts"

    def _play(self, out: io.BufferedIOBase, segments: list[Segment]) -> None:
        rate = 1.0
        for segment in segments:
            start = time.monotonic()
            if segment.data is not None:
                rate = len(segment.data) / segment.seconds
                chunks: Iterator[bytes] = (
                    segment.data[i : i + self.CHUNK] for i in range(0, len(segment.data), self.CHUNK)
                )
            else:
                chunks = iter(lambda: os.urandom(self.CHUNK), b"")
            sent = 0
            for chunk in chunks:
                if self._stop.is_set():
                    return
                out.write(chunk)
                sent += len(chunk)
                time.sleep(max(0.0, start + sent / rate - time.monotonic()))

    def close(self) -> None:
        self._stop.set()
        self._server.shutdown()
        self._server.server_close()


class LoginCamera:
    """An HTTP camera that wants credentials: every request gets 401 with a Basic challenge."""

    def __init__(self) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="camera"')
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, name="login-camera", daemon=True).start()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self._server.server_address[1]}"

    @property
    def url(self) -> str:
        return f"http://{self.host}/video.mjpg"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class HlsCamera:
    """An HLS camera: a playlist of one MPEG-TS segment, both served over HTTP from ``root``.

    ``playlist(name, segment_url)`` adds a playlist whose segment is wherever ``segment_url`` says: ``seg.ts`` (served
    beside it), or a trick such as ``file:///...`` that must not make the server read its own files.
    """

    def __init__(self, root: Path, clip: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        (root / "seg.ts").write_bytes(mpegts(clip, seconds=2.0))
        handler = functools.partial(_QuietFiles, directory=str(root))
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=self._server.serve_forever, name="hls-camera", daemon=True).start()

    @property
    def segment(self) -> Path:
        return self.root / "seg.ts"

    def playlist(self, name: str, segment_url: str) -> str:
        """Write playlist ``name`` and return its URL."""
        (self.root / name).write_text(
            "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:10\n#EXT-X-MEDIA-SEQUENCE:0\n"
            f"#EXTINF:2.0,\n{segment_url}\n#EXT-X-ENDLIST\n"
        )
        return f"http://127.0.0.1:{self._server.server_address[1]}/{name}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class _QuietFiles(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass
