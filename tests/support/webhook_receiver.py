"""``WebhookReceiver``: a real HTTP server on 127.0.0.1 that takes webhook POSTs, checks their signatures, and can
refuse requests, go away and come back on the same port."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from streamsrv.outputs.signing import EVENT_ID_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, verify
from tests.support.processes import free_port


@dataclass(frozen=True)
class Delivery:
    """One POST the receiver accepted (answered 2xx)."""

    event_id: str
    event: dict[str, Any]
    signed: bool
    attempt: int
    received_at: float  # time.monotonic()


class WebhookReceiver:
    """Accepts POSTs to any path; ``fail_next`` requests get 503 first, and requests for ``failing_cameras``
    always get 500, and requests for ``slow_cameras`` are answered only after that camera's delay in seconds.
    ``accepted`` lists what it took, repeats included, in arrival order."""

    def __init__(self, secret: bytes | None = None, port: int | None = None) -> None:
        self.secret = secret
        self.port = port if port is not None else free_port()
        self.accepted: list[Delivery] = []
        self.refused = 0
        self.fail_next = 0
        self.failing_cameras: set[str] = set()
        self.slow_cameras: dict[str, float] = {}
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                self.send_response(receiver._answer(body, self.headers))
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        """Go away: the port refuses connections until ``start``."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def ids(self) -> list[str]:
        with self._lock:
            return [d.event_id for d in self.accepted]

    def _answer(self, body: bytes, headers: Any) -> int:
        event = json.loads(body)
        time.sleep(self.slow_cameras.get(event["camera_id"], 0.0))  # each request has its own thread
        signed = self.secret is not None and verify(
            self.secret, body, headers[TIMESTAMP_HEADER] or "", headers[SIGNATURE_HEADER] or ""
        )
        with self._lock:
            if self.fail_next > 0 or event["camera_id"] in self.failing_cameras:
                self.fail_next = max(0, self.fail_next - 1)
                self.refused += 1
                return 503
            attempt = int(headers["X-Streamsrv-Attempt"])
            self.accepted.append(Delivery(headers[EVENT_ID_HEADER], event, signed, attempt, time.monotonic()))
            return 200
