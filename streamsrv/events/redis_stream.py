"""Reading the Redis event stream: the subscription thread (blocking XREAD) and stream entries as records."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import redis
from pydantic import ValidationError
from redis.backoff import NoBackoff
from redis.retry import Retry

from streamsrv.events.model import Event
from streamsrv.events.protocol import Callback, EventFilter, EventRecord, call_subscriber

log = logging.getLogger(__name__)
REDIS_DOWN = (redis.ConnectionError, redis.TimeoutError, OSError)


def redis_client(url: str, timeout_s: float) -> redis.Redis:
    # No retries inside redis-py: the caller decides (back-off, buffering), and no call blocks for long.
    return redis.Redis.from_url(
        url, socket_timeout=timeout_s, socket_connect_timeout=min(timeout_s, 2.0), retry=Retry(NoBackoff(), 0)
    )


class StreamSubscription:
    """A thread following the stream with blocking XREAD, reconnecting with back-off."""

    _BLOCK_MS = 1000

    def __init__(
        self,
        url: str,
        stream: str,
        timeout_s: float,
        backoff: tuple[float, float],
        on_close: Callable[[StreamSubscription], None],
        callback: Callback,
        flt: EventFilter,
        start: str,
    ) -> None:
        self._stream, self._backoff, self._on_close = stream, backoff, on_close
        self._callback, self._filter, self._last = callback, flt, start
        self._stop = threading.Event()
        self._client = redis_client(url, timeout_s + self._BLOCK_MS / 1000)
        self._thread = threading.Thread(target=self._run, name="redis-events-reader", daemon=True)
        self._thread.start()

    def close(self) -> None:
        # No join: closing from an event loop must not wait out a blocking XREAD; the thread ends within it.
        self._stop.set()
        self._on_close(self)

    def _run(self) -> None:
        delay = self._backoff[0]
        while not self._stop.is_set():
            try:
                replies = self._client.xread({self._stream: self._last}, count=500, block=self._BLOCK_MS)
            except REDIS_DOWN:
                self._stop.wait(delay)
                delay = min(delay * 2, self._backoff[1])
                continue
            delay = self._backoff[0]
            # RESP2 answers [[stream, entries]], RESP3 {stream: entries}.
            per_stream = replies.values() if isinstance(replies, dict) else [e for _, e in replies or []]
            for entries in per_stream:
                for entry_id, record in stream_records(entries):
                    self._last = entry_id
                    if record is not None and self._filter(record.event) and not self._stop.is_set():
                        call_subscriber(self._callback, record)
        self._client.close()


def _str(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def stream_records(entries: Any) -> list[tuple[str, EventRecord | None]]:
    """``(entry id, record)`` per stream entry, the record None for an entry that is not a readable event."""
    out: list[tuple[str, EventRecord | None]] = []
    for entry_id, fields in entries or []:
        eid = _str(entry_id)
        try:
            out.append((eid, EventRecord(eid, Event.from_json((fields or {})[b"event"]))))
        except (KeyError, ValidationError):
            # Another producer's entry, or a future schema: skipped, not fatal to the reader.
            log.warning("skipping unreadable stream entry %s", eid)
            out.append((eid, None))
    return out
