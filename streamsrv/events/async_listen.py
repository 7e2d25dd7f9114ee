"""Events of any bus as an async iterator, for SSE and WebSocket handlers."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncGenerator, Collection

from streamsrv.events.protocol import EventBus, EventRecord


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
