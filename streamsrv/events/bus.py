"""The event bus: publish events, subscribe to them (callback or async iterator), read recent history.

``EventBus`` is the one interface; ``InProcessBus`` is the embedded default and ``RedisBus``
(``streamsrv.events.redis_bus``) delivers through Redis. Every stored event has a ``cursor``: an opaque,
increasing position in that bus's history, to resume from (``after=``), e.g. an SSE ``Last-Event-ID``.

Example:
    >>> from streamsrv.events.model import EventSequencer
    >>> bus = InProcessBus(history_size=100)
    >>> seen = []
    >>> sub = bus.subscribe(lambda rec: seen.append(rec.event.seq), camera_id="door")
    >>> seqr = EventSequencer("door")
    >>> bus.publish(seqr.make("camera.online", ts=1.0))
    >>> seen, [r.event.type for r in bus.history(camera_id="door")]
    ([1], ['camera.online'])
    >>> sub.close()
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from collections.abc import AsyncGenerator, Callable, Collection
from dataclasses import dataclass
from typing import Protocol

from streamsrv.config.models import EventsConfig
from streamsrv.errors import StreamsrvError
from streamsrv.events.model import Event

log = logging.getLogger(__name__)


class EventBusUnavailable(StreamsrvError):
    """The bus's backing store (Redis) cannot be reached for a read; publishing never raises this."""


@dataclass(frozen=True, slots=True)
class EventRecord:
    """An event as stored by a bus, with its position there."""

    cursor: str
    event: Event


@dataclass(frozen=True, slots=True)
class BusStats:
    """Counters of a bus since it started.

    ``accepted``: handed to ``publish``; ``published``: delivered (to Redis, or to history and subscribers
    in-process); ``buffered``: waiting for Redis now; ``dropped``: lost to the buffer bound (never silently:
    counted here and logged); ``redis_connected`` is None for the in-process bus.
    """

    accepted: int
    published: int
    buffered: int
    dropped: int
    redis_connected: bool | None
    reconnects: int
    subscribers: int
    last_error: str | None


@dataclass(frozen=True, slots=True)
class EventFilter:
    """Which events a subscriber or history query wants; None means any."""

    camera_id: str | None = None
    types: frozenset[str] | None = None

    @classmethod
    def of(cls, camera_id: str | None, types: Collection[str] | str | None) -> EventFilter:
        return cls(camera_id, frozenset([types] if isinstance(types, str) else types) if types else None)

    def __call__(self, event: Event) -> bool:
        return (self.camera_id is None or event.camera_id == self.camera_id) and (
            self.types is None or event.type in self.types
        )


class Subscription(Protocol):
    def close(self) -> None:
        """Stop delivering to this subscriber."""
        ...


Callback = Callable[[EventRecord], None]


class EventBus(Protocol):
    """What the pipeline publishes to and the API reads from."""

    def publish(self, event: Event) -> None:
        """Hand over an event; never blocks on a network. Thread-safe."""
        ...

    def subscribe(
        self,
        callback: Callback,
        *,
        camera_id: str | None = None,
        types: Collection[str] | None = None,
        after: str | None = None,
    ) -> Subscription:
        """Call ``callback`` for each matching event, in order; from just after cursor ``after`` when given
        (catch-up, then live), else from now. Callbacks must be quick: they run on the bus's thread."""
        ...

    def history(
        self,
        *,
        camera_id: str | None = None,
        type: str | None = None,
        since: float | None = None,
        after: str | None = None,
        limit: int = 100,
    ) -> list[EventRecord]:
        """Matching events, oldest first: the first ``limit`` after cursor ``after`` when given, else the newest
        ``limit`` with ``ts >= since``."""
        ...

    def stats(self) -> BusStats: ...

    def close(self) -> None: ...


async def listen(
    bus: EventBus,
    *,
    camera_id: str | None = None,
    types: Collection[str] | None = None,
    after: str | None = None,
    max_queue: int = 1000,
) -> AsyncGenerator[EventRecord, None]:
    """Matching events as an async iterator (for SSE and WebSocket handlers).

    A consumer more than ``max_queue`` events behind loses the oldest ones (it can tell from ``seq`` and
    catch up with ``history(after=...)``); a slow client never slows the bus.
    """
    loop = asyncio.get_running_loop()
    queue: deque[EventRecord] = deque(maxlen=max_queue)
    ready = asyncio.Event()

    def push(record: EventRecord) -> None:
        queue.append(record)
        ready.set()

    def from_bus_thread(record: EventRecord) -> None:
        loop.call_soon_threadsafe(push, record)

    sub = bus.subscribe(from_bus_thread, camera_id=camera_id, types=types, after=after)
    try:
        while True:
            await ready.wait()
            ready.clear()
            while queue:
                yield queue.popleft()
    finally:
        sub.close()


class _InProcessSubscription:
    def __init__(self, bus: InProcessBus, callback: Callback, flt: EventFilter) -> None:
        self._bus, self.callback, self.filter = bus, callback, flt

    def close(self) -> None:
        self._bus._remove(self)


class InProcessBus:
    """The embedded bus: history in a bounded deque, subscribers called in the publisher's thread, in order."""

    def __init__(self, history_size: int = 1000) -> None:
        self._history: deque[EventRecord] = deque(maxlen=history_size)
        self._subs: list[_InProcessSubscription] = []
        # Re-entrant: a callback may publish (a derived event) without deadlocking.
        self._lock = threading.RLock()
        self._n = 0

    def publish(self, event: Event) -> None:
        with self._lock:
            self._n += 1
            record = EventRecord(str(self._n), event)
            self._history.append(record)
            for sub in list(self._subs):
                if sub.filter(event):
                    _call(sub.callback, record)

    def subscribe(
        self,
        callback: Callback,
        *,
        camera_id: str | None = None,
        types: Collection[str] | None = None,
        after: str | None = None,
    ) -> Subscription:
        sub = _InProcessSubscription(self, callback, EventFilter.of(camera_id, types))
        with self._lock:
            if after is not None:
                for record in self._history:
                    if int(record.cursor) > int(after) and sub.filter(record.event):
                        _call(callback, record)
            self._subs.append(sub)
        return sub

    def history(
        self,
        *,
        camera_id: str | None = None,
        type: str | None = None,
        since: float | None = None,
        after: str | None = None,
        limit: int = 100,
    ) -> list[EventRecord]:
        flt = EventFilter.of(camera_id, type)
        with self._lock:
            records = list(self._history)
        if after is not None:
            return [r for r in records if int(r.cursor) > int(after) and flt(r.event)][:limit]
        matching = [r for r in records if flt(r.event) and (since is None or r.event.ts >= since)]
        return matching[-limit:] if limit > 0 else []

    def stats(self) -> BusStats:
        with self._lock:
            return BusStats(self._n, self._n, 0, 0, None, 0, len(self._subs), None)

    def close(self) -> None:
        with self._lock:
            self._subs.clear()

    def _remove(self, sub: _InProcessSubscription) -> None:
        with self._lock:
            if sub in self._subs:
                self._subs.remove(sub)


def _call(callback: Callback, record: EventRecord) -> None:
    try:
        callback(record)
    except Exception:
        # One broken subscriber must not stop delivery to the others or break the publisher.
        log.exception("event subscriber failed on %s #%d", record.event.camera_id, record.event.seq)


def create_bus(cfg: EventsConfig) -> EventBus:
    """The bus the config asks for: Redis when ``redis_url`` is set, else in-process."""
    if cfg.redis_url:
        from streamsrv.events.redis_bus import RedisBus

        return RedisBus(cfg.redis_url, stream_maxlen=cfg.stream_maxlen, buffer_max_events=cfg.buffer_max_events)
    return InProcessBus(history_size=cfg.history_size)
