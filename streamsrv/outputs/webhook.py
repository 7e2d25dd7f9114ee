"""``WebhookOutput``: events POSTed to one HTTP receiver from a durable outbox, in order per camera.

Each matching event is stored in the outbox first, then delivered by this output's own threads (``concurrency``
of them): each camera has at most one POST in flight, so its events arrive in order, while other cameras' events
go out beside it, and a camera whose receiver answers slowly holds up only itself. The head of each camera's
queue is tried until the receiver answers 2xx; a failure waits out a jittered, capped exponential back-off before
the next try, and blocks only that camera's later events, not other cameras'. After
``max_retries`` failed retries the event goes to the dead letters and the camera's next event is tried. Delivery
is at least once (a crash between a 2xx and its acknowledgement repeats it): receivers drop repeats by the
``X-Streamsrv-Event-Id`` header.

Example:
    >>> out = WebhookOutput("webhook-0", WebhookConfig(url="http://127.0.0.1:9/hook"), outbox)  # doctest: +SKIP
    >>> out.start(); out.offer(event)  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque

import httpx

from streamsrv.config.models import redact_url
from streamsrv.config.outputs import WebhookConfig
from streamsrv.events.model import Event
from streamsrv.outputs.backoff import retry_delay
from streamsrv.outputs.outbox import Outbox, OutboxEntry
from streamsrv.outputs.signing import ATTEMPT_HEADER, signed_headers
from streamsrv.outputs.status import OutputStatus

log = logging.getLogger(__name__)


class WebhookOutput:
    """One ``outputs.webhooks`` entry; ``offer`` is thread-safe and returns once the event is stored."""

    def __init__(self, name: str, cfg: WebhookConfig, outbox: Outbox) -> None:
        self.name = name
        self.cfg = cfg
        self.outbox = outbox
        self._secret = cfg.secret.get_secret_value().encode() if cfg.secret is not None else None
        self._cond = threading.Condition()
        self._queues: dict[str, deque[OutboxEntry]] = {}
        self._failures: dict[str, int] = {}  # camera -> consecutive failures of its head
        self._not_before: dict[str, float] = {}  # camera -> monotonic time of its head's next try
        self._in_flight: set[str] = set()  # cameras whose head is being POSTed now
        self._running = 0  # sender threads still running; the last one closes the client
        self._dead: dict[str, OutboxEntry] = {}
        self._delivered = 0
        self._failed = 0
        self._last_error: str | None = None
        self._stopping = False
        self._loader = threading.Thread(target=self._start, name=f"output-{name}-load", daemon=True)
        self._client: httpx.Client | None = None
        self._threads = [
            threading.Thread(target=self._run, name=f"output-{name}-{i}", daemon=True) for i in range(cfg.concurrency)
        ]

    def start(self) -> None:
        self._loader.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop delivering (what is pending stays in the outbox for the next start) and close the outbox."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        deadline = time.monotonic() + timeout_s + self.cfg.timeout_s
        for thread in (self._loader, *self._threads):
            if thread.is_alive():
                thread.join(max(0.0, deadline - time.monotonic()))
        self.outbox.close()

    def offer(self, event: Event) -> None:
        """Store and queue ``event`` if this webhook wants it."""
        if not self.cfg.wants(event.camera_id, event.type):
            return
        entry = self.outbox.add(event.camera_id, event.id, event.to_json().encode())
        self._enqueue(entry)

    def status(self) -> OutputStatus:
        with self._cond:
            pending = sum(len(q) for q in self._queues.values())
            return OutputStatus(
                self.name,
                "webhook",
                redact_url(self.cfg.url),
                self._delivered,
                self._failed,
                pending,
                len(self._dead),
                0,
                None,
                self._last_error,
            )

    def dead_letters(self) -> list[OutboxEntry]:
        with self._cond:
            return list(self._dead.values())

    def redrive(self, event_ids: set[str] | None = None) -> int:
        """Queue dead entries again (those of ``event_ids``, or all), at the end of their cameras' queues."""
        with self._cond:
            chosen = [e for e in self._dead.values() if event_ids is None or e.event_id in event_ids]
            for entry in chosen:
                del self._dead[entry.key]
        for entry in chosen:
            self._enqueue(self.outbox.redrive(entry))
        return len(chosen)

    def _enqueue(self, entry: OutboxEntry) -> None:
        with self._cond:
            self._queues.setdefault(entry.camera_id, deque()).append(entry)
            self._cond.notify_all()

    def _start(self) -> None:
        if not self._load():
            return
        # One client for all senders: httpx.Client is thread-safe and pools connections to the receiver.
        self._client = httpx.Client(
            timeout=self.cfg.timeout_s,
            follow_redirects=False,
            limits=httpx.Limits(max_connections=self.cfg.concurrency, max_keepalive_connections=self.cfg.concurrency),
        )
        with self._cond:
            self._running = len(self._threads)
        for thread in self._threads:
            thread.start()

    def _run(self) -> None:
        client = self._client
        assert client is not None  # made before the senders start
        while True:
            with self._cond:
                entry = self._next_due()
                while entry is None and not self._stopping:
                    self._cond.wait(self._wait_s())
                    entry = self._next_due()
                if self._stopping or entry is None:
                    break
                self._in_flight.add(entry.camera_id)
                failures = self._failures.get(entry.camera_id, 0)
            error = self._post(client, entry, failures + 1)
            try:
                self._settle(entry, error)
            except Exception:
                # The outbox is unreachable (Redis down): the entry stays queued and is tried again later.
                log.exception("webhook %s: cannot record the outcome of event %s", self.name, entry.event_id)
                with self._cond:
                    self._not_before[entry.camera_id] = time.monotonic() + self.cfg.backoff_initial_s
            finally:
                with self._cond:
                    self._in_flight.discard(entry.camera_id)
                    self._cond.notify_all()  # the camera's next event may go now
        with self._cond:
            self._running -= 1
            last = self._running == 0
        if last:
            client.close()

    def _load(self) -> bool:
        """Read what the outbox holds from earlier runs, retrying while it is unreachable (Redis down at start);
        False if stopped first. Nothing is delivered before: a camera's stored events go before its new ones."""
        failures = 0
        while True:
            try:
                pending, dead = self.outbox.load()
                break
            except Exception as exc:
                failures += 1
                error = redact_url(str(exc))  # a Redis URL's password must not reach a log or the API
                log.warning("webhook %s: cannot read its outbox (%s); retrying", self.name, error)
                with self._cond:
                    self._last_error = f"outbox: {error}"
                    if self._cond.wait_for(lambda: self._stopping, retry_delay(failures, 1.0, 30.0)):
                        return False
        with self._cond:
            queued = {e.key for queue in self._queues.values() for e in queue}  # offered while loading
            for entry in pending:
                if entry.key not in queued:
                    self._queues.setdefault(entry.camera_id, deque()).append(entry)
            for camera, queue in self._queues.items():
                self._queues[camera] = deque(sorted(queue, key=lambda e: _order(e.key)))
            self._dead = {e.key: e for e in dead}
            return not self._stopping

    def _next_due(self) -> OutboxEntry | None:
        """The oldest head among the cameras whose head may be tried now and is not being sent already."""
        now = time.monotonic()
        heads = [
            q[0]
            for cam, q in self._queues.items()
            if q and cam not in self._in_flight and self._not_before.get(cam, 0.0) <= now
        ]
        return min(heads, key=lambda e: _order(e.key), default=None)

    def _wait_s(self) -> float | None:
        waiting = [
            self._not_before[cam]
            for cam, q in self._queues.items()
            if q and cam in self._not_before and cam not in self._in_flight
        ]
        return max(0.0, min(waiting) - time.monotonic()) if waiting else None

    def _post(self, client: httpx.Client, entry: OutboxEntry, attempt: int) -> str | None:
        """None when the receiver took the event, else why not."""
        headers = signed_headers(self._secret, entry.body, entry.event_id)
        headers[ATTEMPT_HEADER] = str(attempt)
        try:
            response = client.post(self.cfg.url, content=entry.body, headers=headers)
        except httpx.HTTPError as exc:
            # httpx puts the URL in some messages: mask its credentials before it reaches the API or a log
            return redact_url(f"{type(exc).__name__}: {exc}")
        if 200 <= response.status_code < 300:
            return None
        return f"HTTP {response.status_code}"

    def _settle(self, entry: OutboxEntry, error: str | None) -> None:
        camera = entry.camera_id
        if error is None:
            self.outbox.delivered(entry)
            with self._cond:
                self._queues[camera].popleft()
                self._failures.pop(camera, None)
                self._not_before.pop(camera, None)
                self._delivered += 1
            return
        with self._cond:
            self._failed += 1
            self._last_error = error
            failures = self._failures.get(camera, 0) + 1
        if failures > self.cfg.max_retries:
            log.warning(
                "webhook %s: event %s is dead after %d attempts: %s", self.name, entry.event_id, failures, error
            )
            dead = self.outbox.bury(entry, error)
            with self._cond:
                self._queues[camera].popleft()
                self._failures.pop(camera, None)
                self._not_before.pop(camera, None)
                self._dead[dead.key] = dead
            return
        delay = retry_delay(failures, self.cfg.backoff_initial_s, self.cfg.backoff_max_s)
        log.info(
            "webhook %s: event %s failed (%s); retry %d in %.1f s", self.name, entry.event_id, error, failures, delay
        )
        with self._cond:
            self._failures[camera] = failures
            self._not_before[camera] = time.monotonic() + delay


def _order(key: str) -> tuple[int, ...]:
    """Outbox keys in storage order: spool keys are numbers, Redis stream ids ``<ms>-<seq>``."""
    return tuple(int(part) for part in key.split("-"))
