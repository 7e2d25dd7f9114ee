"""The embedded event bus: history in a bounded deque, subscribers called in the publisher's thread.

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

import threading
from collections import deque
from collections.abc import Collection

from streamsrv.events.model import Event
from streamsrv.events.protocol import BusStats, Callback, EventFilter, EventRecord, Subscription, call_subscriber


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
                    call_subscriber(sub.callback, record)

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
                        call_subscriber(callback, record)
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
            history = self._history
            return BusStats(self._n, self._n, 0, 0, None, 0, len(self._subs), None, len(history), history.maxlen or 0)

    def close(self) -> None:
        with self._lock:
            self._subs.clear()

    def _remove(self, sub: _InProcessSubscription) -> None:
        with self._lock:
            if sub in self._subs:
                self._subs.remove(sub)
