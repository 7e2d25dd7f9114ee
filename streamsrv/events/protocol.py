"""What every event bus offers (``EventBus``) and the types its implementations share.

``InProcessBus`` (``inprocess_bus``) is the embedded default and ``RedisBus`` (``redis_bus``) delivers through
Redis; ``create_bus`` (``factory``) picks one from the config. Every stored event has a ``cursor``: an opaque,
increasing position in that bus's history, to resume from (``after=``), e.g. an SSE ``Last-Event-ID``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Protocol

from streamsrv.events.model import Event

log = logging.getLogger(__name__)


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
    counted here and logged); ``redis_connected`` is None for the in-process bus. ``held``: events kept in this
    process's memory now (the in-process bus's history, or those waiting for Redis), at most ``held_max``.
    ``refused_stale``: events of cameras whose lease this node no longer held when writing (cluster mode: a stale
    owner's writes are refused, see ``redis_fence``).
    """

    accepted: int
    published: int
    buffered: int
    dropped: int
    redis_connected: bool | None
    reconnects: int
    subscribers: int
    last_error: str | None
    held: int = 0
    held_max: int = 0
    refused_stale: int = 0


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


def call_subscriber(callback: Callback, record: EventRecord) -> None:
    """Deliver one record; a failing subscriber is logged, never raised to the publisher."""
    try:
        callback(record)
    except Exception:
        # One broken subscriber must not stop delivery to the others or break the publisher.
        log.exception("event subscriber failed on %s #%d", record.event.camera_id, record.event.seq)
