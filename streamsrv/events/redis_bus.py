"""Event delivery through Redis: pub/sub for live listeners, a capped stream for replay and catch-up.

Every event is PUBLISHed on ``streamsrv:events`` and ``streamsrv:events:{camera_id}`` and XADDed (``MAXLEN ~``)
to the stream ``streamsrv:events`` (keys and channels are separate namespaces in Redis), by one Lua script per
event, so the three happen together or not at all.

``publish`` never touches the network: events go into a bounded in-memory buffer (``buffer_max_events``, in the
publishing process) that one background thread drains in order, in pipelined batches. While Redis is down the
thread retries with exponential back-off and the buffer holds what arrives; past the bound the oldest waiting
events are dropped, counted in ``stats().dropped`` and logged. A batch whose reply was lost is sent again; the
script skips events whose ``seq`` Redis already has for that ``(camera_id, run_id)`` (a short-lived key per
producer run), so a retry never adds an event twice. If Redis itself dies after applying an event but before
answering, it comes back without that event (no persistence) or with it (AOF): either way the stream ends up
holding it once; a pub/sub listener may then see it twice and can tell by ``(run_id, seq)``.

Example:
    >>> bus = RedisBus("redis://127.0.0.1:6379/0")  # doctest: +SKIP
    >>> bus.publish(event)  # doctest: +SKIP
    >>> bus.stats().published  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Collection

import redis

from streamsrv.config.models import redact_url
from streamsrv.errors import EventBusUnavailable
from streamsrv.events.model import Event
from streamsrv.events.protocol import BusStats, Callback, EventFilter, EventRecord, Subscription
from streamsrv.events.redis_fence import FENCED_DELIVER, REFUSED, FenceLookup
from streamsrv.events.redis_stream import REDIS_DOWN, StreamSubscription, redis_client, stream_records

log = logging.getLogger(__name__)

# KEYS: stream, last-seq key. ARGV: seq, json, maxlen, channel, camera channel, ttl, camera_id, type.
_DELIVER = """
local last = redis.call('GET', KEYS[2])
if last and tonumber(last) >= tonumber(ARGV[1]) then return 0 end
redis.call('SET', KEYS[2], ARGV[1], 'EX', ARGV[6])
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], '*', 'camera_id', ARGV[7], 'type', ARGV[8], 'event', ARGV[2])
redis.call('PUBLISH', ARGV[4], ARGV[2])
redis.call('PUBLISH', ARGV[5], ARGV[2])
return 1
"""
# Stream ids carry the XADD time; events are XADDed after their capture, so this margin only covers clock skew.
_CLOCK_SLACK_S = 60.0
_HISTORY_SCAN_MAX = 20_000
_LOG_EVERY_S = 10.0


class RedisBus:
    """Publishes to Redis from a background thread; reads history and subscribes through the stream.

    Args:
        url: ``redis://[:password@]host:port/db``.
        channel: pub/sub channel; per-camera channels are ``{channel}:{camera_id}``.
        stream: stream key for replay.
        stream_maxlen: approximate cap of the stream.
        buffer_max_events: events held in memory while Redis is unreachable.
    """

    def __init__(
        self,
        url: str,
        *,
        channel: str = "streamsrv:events",
        stream: str = "streamsrv:events",
        stream_maxlen: int = 100_000,
        buffer_max_events: int = 10_000,
        batch_size: int = 200,
        seq_ttl_s: int = 86_400,
        backoff_initial_s: float = 0.05,
        backoff_max_s: float = 5.0,
        health_interval_s: float = 5.0,
        socket_timeout_s: float = 2.0,
        fence: FenceLookup | None = None,
    ) -> None:
        self.url, self.channel, self.stream = url, channel, stream
        self.stream_maxlen, self.buffer_max_events, self.batch_size = stream_maxlen, buffer_max_events, batch_size
        self._seq_ttl_s = seq_ttl_s
        self._backoff = (backoff_initial_s, backoff_max_s)
        self._health_interval_s = health_interval_s
        self._timeout_s = socket_timeout_s
        self._reader = redis_client(url, socket_timeout_s)
        self._writer = redis_client(url, socket_timeout_s)
        self._script = self._writer.register_script(_DELIVER)
        self._fence = fence
        self._fenced_script = self._writer.register_script(FENCED_DELIVER)
        self._refused_stale = 0
        self._buffer: deque[Event] = deque()
        self._inflight = 0
        self._cond = threading.Condition()
        self._closing = False
        self._close_deadline = float("inf")
        self._accepted = self._published = self._dropped = self._reconnects = 0
        self._connected = False
        self._ever_connected = False
        self._last_error: str | None = None
        self._last_drop_log = 0.0
        self._warned = False
        self._down_since = 0.0
        # Set only by close: cuts a back-off short (publish must not, or an outage would be hammered).
        self._wake = threading.Event()
        self._subs: set[StreamSubscription] = set()
        self._thread = threading.Thread(target=self._run, name="redis-events", daemon=True)
        self._thread.start()

    # --- publishing ---------------------------------------------------------------------------------------

    def publish(self, event: Event) -> None:
        with self._cond:
            self._accepted += 1
            if self._closing:
                self._drop("the bus is closed")
            elif len(self._buffer) + self._inflight >= self.buffer_max_events:
                # The oldest waiting event goes (recent ones matter more to live consumers); if the whole bound
                # is in flight, the new one does.
                if self._buffer:
                    self._buffer.popleft()
                    self._buffer.append(event)
                self._drop(f"the buffer of {self.buffer_max_events} is full while Redis is unreachable")
            else:
                self._buffer.append(event)
            self._cond.notify()

    def flush(self, timeout_s: float = 5.0) -> bool:
        """Wait until everything published so far is in Redis; False on timeout."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self._buffer or self._inflight:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop subscribers, try for up to ``timeout_s`` to deliver what is buffered, then stop."""
        with self._cond:
            subs = list(self._subs)
        for sub in subs:
            sub.close()
        with self._cond:
            self._closing = True
            self._close_deadline = time.monotonic() + timeout_s
            self._cond.notify_all()
        self._wake.set()
        self._thread.join(timeout_s + self._timeout_s + 1)
        left = len(self._buffer) + self._inflight
        if left:
            log.error("event bus closed with %d events not delivered to Redis", left)
        self._reader.close()
        self._writer.close()

    def stats(self) -> BusStats:
        with self._cond:
            return BusStats(
                accepted=self._accepted,
                published=self._published,
                buffered=len(self._buffer) + self._inflight,
                dropped=self._dropped,
                redis_connected=self._connected,
                reconnects=self._reconnects,
                subscribers=len(self._subs),
                last_error=self._last_error,
                held=len(self._buffer) + self._inflight,
                held_max=self.buffer_max_events,
                refused_stale=self._refused_stale,
            )

    def _drop(self, why: str) -> None:
        self._dropped += 1
        now = time.monotonic()
        if now - self._last_drop_log >= _LOG_EVERY_S:
            self._last_drop_log = now
            log.warning("dropping events: %s (%d dropped so far)", why, self._dropped)

    def _run(self) -> None:
        delay = self._backoff[0]
        next_check = 0.0  # learn at once whether Redis is there
        while True:
            with self._cond:
                while not self._buffer and not self._closing and time.monotonic() < next_check:
                    self._cond.wait(next_check - time.monotonic())
                if self._closing and (not self._buffer or time.monotonic() >= self._close_deadline):
                    return
                batch = [self._buffer.popleft() for _ in range(min(self.batch_size, len(self._buffer)))]
                self._inflight = len(batch)
            refused = 0
            try:
                if batch:
                    refused = self._deliver(batch)
                else:
                    self._writer.ping()
            except Exception as exc:
                # Whatever failed, the batch goes back and is retried: this thread must never lose events silently.
                if not isinstance(exc, redis.RedisError | OSError):
                    log.exception("unexpected error delivering events to Redis")
                self._down(exc, batch)
                self._backoff_wait(delay)
                delay = min(delay * 2, self._backoff[1])
                continue
            delay = self._backoff[0]
            next_check = time.monotonic() + self._health_interval_s
            self._up(len(batch) - refused, refused)

    def _deliver(self, batch: list[Event]) -> int:
        """Write a batch in one round trip; how many events the fence refused (cluster mode)."""
        pipe = self._writer.pipeline(transaction=False)
        refused_here = 0
        for e in batch:
            if self._fence is not None:
                fence = self._fence(e)  # at delivery: the lease this node holds now, if the event's run is its
                if fence is None:
                    refused_here += 1
                    continue
                self._fenced_script(
                    keys=[self.stream, fence.seq_key, fence.lease_key],
                    args=[
                        e.seq,
                        e.to_json(),
                        self.stream_maxlen,
                        self.channel,
                        f"{self.channel}:{e.camera_id}",
                        e.camera_id,
                        e.type,
                        fence.lease_value,
                    ],
                    client=pipe,
                )
                continue
            self._script(
                keys=[self.stream, f"streamsrv:lastseq:{e.camera_id}:{e.run_id}"],
                args=[
                    e.seq,
                    e.to_json(),
                    self.stream_maxlen,
                    self.channel,
                    f"{self.channel}:{e.camera_id}",
                    self._seq_ttl_s,
                    e.camera_id,
                    e.type,
                ],
                client=pipe,
            )
        replies = pipe.execute() if len(pipe) else []
        return refused_here + sum(1 for r in replies if r == REFUSED)

    def _up(self, delivered: int, refused: int = 0) -> None:
        with self._cond:
            if refused:
                self._refused_stale += refused
                log.warning(
                    "refused %d event(s) of cameras whose lease this node no longer holds (%d so far)",
                    refused,
                    self._refused_stale,
                )
            self._warned = False
            self._inflight = 0
            self._published += delivered
            if not self._connected:
                if self._ever_connected:
                    self._reconnects += 1
                    log.info(
                        "Redis reachable again after %.1f s; delivering %d buffered events",
                        time.monotonic() - self._down_since,
                        delivered + len(self._buffer),
                    )
                self._connected = self._ever_connected = True
            self._cond.notify_all()

    def _down(self, exc: Exception, batch: list[Event]) -> None:
        """Put a failed batch back in front, in order (publish kept room for it), and note the outage."""
        with self._cond:
            self._buffer.extendleft(reversed(batch))
            self._inflight = 0
            self._last_error = f"{type(exc).__name__}: {exc}"
            if not self._warned:  # once per outage
                log.warning("Redis at %s unreachable (%s); buffering events", self._safe_url(), self._last_error)
                self._warned = True
                self._down_since = time.monotonic()
            self._connected = False
            self._cond.notify_all()

    def _backoff_wait(self, delay: float) -> None:
        if self._closing:
            time.sleep(max(0.0, min(delay, self._close_deadline - time.monotonic())))
        else:
            self._wake.wait(delay)

    # --- reading ------------------------------------------------------------------------------------------

    def subscribe(
        self,
        callback: Callback,
        *,
        camera_id: str | None = None,
        types: Collection[str] | None = None,
        after: str | None = None,
    ) -> Subscription:
        """Follow the stream (XREAD) from ``after`` or from now; one thread and connection per subscriber."""
        start = after if after is not None else self._last_id()
        flt = EventFilter.of(camera_id, types)
        sub = StreamSubscription(
            self.url, self.stream, self._timeout_s, self._backoff, self._discard, callback, flt, start
        )
        with self._cond:
            self._subs.add(sub)
        return sub

    def _discard(self, sub: StreamSubscription) -> None:
        with self._cond:
            self._subs.discard(sub)

    def history(
        self,
        *,
        camera_id: str | None = None,
        type: str | None = None,
        since: float | None = None,
        after: str | None = None,
        limit: int = 100,
    ) -> list[EventRecord]:
        """Read the stream (XRANGE after a cursor, else XREVRANGE back from the newest), filtering as it goes;
        at most 20 000 entries are scanned per call. Raises EventBusUnavailable when Redis is down."""
        flt = EventFilter.of(camera_id, type)
        out: list[EventRecord] = []
        page = min(max(limit, 100), 1000)
        scanned = 0
        try:
            if after is not None:
                low = f"({after}"
                while len(out) < limit and scanned < _HISTORY_SCAN_MAX:
                    entries = stream_records(self._reader.xrange(self.stream, min=low, max="+", count=page))
                    if not entries:
                        break
                    scanned += len(entries)
                    low = f"({entries[-1][0]}"
                    out += [r for _, r in entries if r is not None and flt(r.event)]
                return out[:limit]
            low = "-" if since is None else str(max(0, int((since - _CLOCK_SLACK_S) * 1000)))
            high = "+"
            while len(out) < limit and scanned < _HISTORY_SCAN_MAX:
                entries = stream_records(self._reader.xrevrange(self.stream, max=high, min=low, count=page))
                if not entries:
                    break
                scanned += len(entries)
                high = f"({entries[-1][0]}"
                out += [
                    r for _, r in entries if r is not None and flt(r.event) and (since is None or r.event.ts >= since)
                ]
        except REDIS_DOWN as exc:
            raise EventBusUnavailable(f"Redis at {self._safe_url()} unreachable: {exc}") from None
        return out[:limit][::-1]

    def _last_id(self) -> str:
        try:
            newest = stream_records(self._reader.xrevrange(self.stream, count=1))
        except REDIS_DOWN:
            # Follow from about now (stream ids are the server's milliseconds).
            return f"{int(time.time() * 1000)}-0"
        return newest[0][0] if newest else "0-0"

    def _safe_url(self) -> str:
        return redact_url(self.url)
