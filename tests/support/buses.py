"""Event-bus helpers for tests."""

from __future__ import annotations

import threading
from collections.abc import Collection
from typing import Any

from streamsrv.events.protocol import Callback, EventBus, Subscription


class SubscribeSignal:
    """An event bus that sets ``subscribed`` once a subscription is in place.

    ``listen`` subscribes "from now" when its consumer first asks for an event, in the event loop: a test waits on
    ``subscribed`` before it publishes, instead of sleeping and hoping the subscription came first.
    """

    def __init__(self, bus: EventBus) -> None:
        self._bus = bus
        self.subscribed = threading.Event()

    def subscribe(
        self,
        callback: Callback,
        *,
        camera_id: str | None = None,
        types: Collection[str] | None = None,
        after: str | None = None,
    ) -> Subscription:
        subscription = self._bus.subscribe(callback, camera_id=camera_id, types=types, after=after)
        self.subscribed.set()
        return subscription

    def __getattr__(self, name: str) -> Any:
        return getattr(self._bus, name)  # publish, history, stats, close: the wrapped bus's own
