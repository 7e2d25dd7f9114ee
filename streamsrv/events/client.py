"""Consuming events: recent history first, then live, without a gap or a repeat between the two.

Two sources with the same behaviour: an ``EventBus`` (``follow_bus``, e.g. a ``RedisBus`` on the server's Redis)
and a running server's HTTP API (``follow_sse``: ``GET /api/events`` for the history, then the Server-Sent Events
stream, resumed with ``Last-Event-ID`` after a dropped connection). ``streamsrv events`` prints either as JSON
lines; the API's streaming endpoints use ``catch_up`` to join history and live events.

Example:
    >>> for event in follow_sse("http://127.0.0.1:8080", type="line.cross", replay=10):  # doctest: +SKIP
    ...     print(event.line, event.direction)
"""

from __future__ import annotations

import json
import logging
import queue
import time
from collections.abc import Generator

import httpx

from streamsrv.errors import StreamsrvError
from streamsrv.events.model import Event
from streamsrv.events.protocol import EventBus, EventRecord

log = logging.getLogger(__name__)

# A server sends a keep-alive comment every 15 s; a connection silent for much longer is dead.
SSE_READ_TIMEOUT_S = 60.0
_RECONNECT_MAX_S = 10.0


def catch_up(
    bus: EventBus,
    *,
    camera_id: str | None = None,
    type: str | None = None,
    since: float | None = None,
    limit: int = 100,
) -> tuple[list[EventRecord], str | None]:
    """The newest ``limit`` matching events (``ts >= since`` when given), and the cursor to follow the bus from.

    Subscribing ``after`` the returned cursor delivers exactly the events that follow the returned ones. When
    none match, the cursor is the bus's newest event of any kind, read before the query, so an event published
    meanwhile is still delivered; it is None only on an empty bus.
    """
    newest = bus.history(limit=1)
    records = bus.history(camera_id=camera_id, type=type, since=since, limit=limit) if limit > 0 else []
    if records:
        return records, records[-1].cursor
    return [], newest[-1].cursor if newest else None


def follow_bus(
    bus: EventBus, *, camera_id: str | None = None, type: str | None = None, replay: int = 0
) -> Generator[Event, None, None]:
    """The newest ``replay`` matching events, then every new one as it is published, forever."""
    records, after = catch_up(bus, camera_id=camera_id, type=type, limit=replay)
    for record in records:
        yield record.event
    arrived: queue.Queue[EventRecord] = queue.Queue()
    sub = bus.subscribe(arrived.put, camera_id=camera_id, types=[type] if type else None, after=after)
    try:
        while True:
            yield arrived.get().event
    finally:
        sub.close()


def follow_sse(
    base_url: str,
    *,
    api_key: str | None = None,
    camera_id: str | None = None,
    type: str | None = None,
    replay: int = 0,
) -> Generator[Event, None, None]:
    """Events from a server's API: the newest ``replay`` from its history, then its live stream, forever.

    A server that cannot be reached, answers 5xx or drops the stream is tried again with growing delays (the
    server's ``retry`` hint first, up to 10 s), resuming after the last event received. Refusals (bad key, bad
    filter) raise ``StreamsrvError``.
    """
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    filters = {k: v for k, v in (("camera", camera_id), ("type", type)) if v is not None}
    timeout = httpx.Timeout(10.0, read=SSE_READ_TIMEOUT_S)
    with httpx.Client(base_url=base_url, headers=headers, timeout=timeout) as client:
        last_id: str | None = None
        to_replay = replay
        delay_s = 1.0
        while True:
            stream = _SseStream(last_id)
            try:
                if to_replay > 0:
                    page = _checked(client.get("/api/events", params={**filters, "limit": to_replay})).json()
                    to_replay, stream.last_id = 0, page["cursor"]
                    yield from (Event.model_validate(e) for e in page["events"])
                sse_headers = {"Last-Event-ID": stream.last_id} if stream.last_id is not None else {}
                with client.stream("GET", "/api/events/stream", params=filters, headers=sse_headers) as response:
                    _checked(response)
                    for event in stream.events(response):
                        yield event
                        # Delivering again: the next loss starts over from the short delay.
                        delay_s = stream.retry_s or 1.0
                problem = "ended"
            except httpx.TransportError as exc:
                problem = f"lost ({exc})"
            except _Unavailable as exc:
                problem = str(exc)
            log.warning("event stream from %s %s; reconnecting in %.1f s", base_url, problem, delay_s)
            last_id = stream.last_id
            time.sleep(delay_s)
            delay_s = min(delay_s * 2, _RECONNECT_MAX_S)


class _Unavailable(Exception):
    """The server answered 5xx: worth trying again later."""


class _SseStream:
    """Parses ``text/event-stream`` lines (the subset the server sends: id, data, retry, comments)."""

    def __init__(self, last_id: str | None) -> None:
        self.last_id = last_id
        self.retry_s: float | None = None

    def events(self, response: httpx.Response) -> Generator[Event, None, None]:
        data: list[str] = []
        event_id: str | None = None
        for line in response.iter_lines():
            if not line:
                if data:
                    self.last_id = event_id if event_id is not None else self.last_id
                    yield Event.from_json("\n".join(data))
                data, event_id = [], None
                continue
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "data":
                data.append(value)
            elif name == "id":
                event_id = value
            elif name == "retry" and value.isdigit():
                self.retry_s = int(value) / 1000


def _checked(response: httpx.Response) -> httpx.Response:
    if response.is_success:
        return response
    response.read()
    try:
        body = response.json()
        detail = json.dumps(body.get("detail", body) if isinstance(body, dict) else body)
    except ValueError:
        detail = response.text[:200]
    what = f"{response.request.method} {response.request.url.path}: {response.status_code} {detail}"
    if response.status_code >= 500:
        raise _Unavailable(f"answered {what}")
    raise StreamsrvError(what)
