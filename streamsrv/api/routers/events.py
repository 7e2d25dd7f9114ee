"""Events: history with filters, live streams (Server-Sent Events, WebSocket) and per-event snapshot JPEGs.

Every endpoint reads the server's event bus (in-process, or Redis when ``events.redis_url`` is set) and sends each
event in the one wire format of docs/events.md. A cursor is an event's opaque position on that bus: history pages
end with one, and SSE sends it as each event's ``id``, so a client resumes with ``after`` or ``Last-Event-ID``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from typing import Annotated, Any, NoReturn

import redis
from fastapi import APIRouter, Depends, Header, HTTPException, Path, Query, WebSocket, WebSocketDisconnect, status
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field, ValidationError

from streamsrv.api.deps import Authenticated, ServerDep, ShutdownDep
from streamsrv.api.schemas import Message, request_error
from streamsrv.config.models import CAMERA_ID_PATTERN
from streamsrv.events import Event, EventBus, EventBusUnavailable, EventRecord, listen
from streamsrv.events.client import catch_up
from streamsrv.events.model import EventType
from streamsrv.runtime.protocol import ServerApi

log = logging.getLogger(__name__)
router = APIRouter(prefix="/api/events", tags=["events"])

# Proxies and load balancers close connections that stay silent for a minute or so.
SSE_KEEPALIVE_S = 15.0
SSE_RETRY_MS = 2000
REPLAY_MAX = 1000
CURSOR_PATTERN = r"^\d{1,20}(-\d{1,20})?$"
EVENT_ID_PATTERN = r"^[0-9a-f]{32}$"
# An in-process bus rejects a Redis-style cursor with ValueError, Redis a malformed one with ResponseError.
_FOREIGN_CURSOR = (ValueError, redis.ResponseError)


class EventFilters(BaseModel):
    """Which events to return; unset filters match everything."""

    camera: str | None = Field(None, pattern=CAMERA_ID_PATTERN, description="Only this camera's events.")
    type: EventType | None = Field(None, description="Only events of this type.")
    since: float | None = Field(
        None, allow_inf_nan=False, description="Only events with ts >= since (Unix epoch seconds)."
    )


class HistoryQuery(EventFilters):
    after: str | None = Field(
        None,
        pattern=CURSOR_PATTERN,
        description="Only events after this cursor (a page's cursor), oldest first; not together with since.",
    )
    limit: int = Field(100, ge=1, le=REPLAY_MAX, description="At most this many events (the newest, without after).")


class StreamQuery(EventFilters):
    after: str | None = Field(
        None,
        pattern=CURSOR_PATTERN,
        description="Resume after this cursor (an event's SSE id); the Last-Event-ID header takes precedence. "
        "Without either, events since `since` (up to 1000) are sent first, then live ones.",
    )


class EventPage(BaseModel):
    events: list[Event] = Field(description="Matching events, oldest first.")
    cursor: str | None = Field(
        description="Position of the last event listed (the given after when none): pass it as after to get the "
        "events that follow."
    )


class EventStreamResponse(StreamingResponse):
    media_type = "text/event-stream"


class JPEGResponse(Response):
    media_type = "image/jpeg"


_UNAVAILABLE: dict[int | str, dict[str, Any]] = {
    503: {"model": Message, "description": "The event store (Redis) cannot be reached."}
}


@router.get(
    "",
    response_model=EventPage,
    dependencies=[Authenticated],
    summary="Recent events, filtered by camera, type and time",
    responses=_UNAVAILABLE,
)
def event_history(query: Annotated[HistoryQuery, Query()], server: ServerDep) -> EventPage:
    if query.since is not None and query.after is not None:
        _invalid(("query", "after"), "give since or after, not both", query.after)
    try:
        records = server.bus.history(
            camera_id=query.camera, type=query.type, since=query.since, after=query.after, limit=query.limit
        )
    except EventBusUnavailable as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc)) from None
    except _FOREIGN_CURSOR:
        _invalid(("query", "after"), "not a cursor of this server's events", query.after)
    return EventPage(events=[r.event for r in records], cursor=records[-1].cursor if records else query.after)


@router.get(
    "/stream",
    response_class=EventStreamResponse,
    dependencies=[Authenticated],
    summary="Live events as Server-Sent Events",
    description="Each event is one message: its cursor as `id`, its JSON as `data`. A comment line is sent every "
    f"{SSE_KEEPALIVE_S:.0f} s while nothing happens. The stream ends when the server shuts down. A reconnecting "
    "EventSource sends Last-Event-ID and misses nothing the bus still holds.",
    responses={
        200: {"content": {"text/event-stream": {"schema": {"type": "string"}}}, "description": "The event stream."},
        **_UNAVAILABLE,
    },
)
async def event_stream(
    query: Annotated[StreamQuery, Query()],
    server: ServerDep,
    shutdown: ShutdownDep,
    last_event_id: Annotated[
        str | None, Header(pattern=CURSOR_PATTERN, description="Resume after this cursor (sent by EventSource).")
    ] = None,
) -> EventStreamResponse:
    if last_event_id is not None:
        start = await run_in_threadpool(_start, server.bus, query, last_event_id, ("header", "last-event-id"))
    else:
        start = await run_in_threadpool(_start, server.bus, query, query.after, ("query", "after"))
    return EventStreamResponse(
        _sse(server.bus, query, *start, shutdown), headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )


def _require_api_key_ws(
    websocket: WebSocket,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(HTTPBearer(auto_error=False))],
    token: Annotated[str | None, Query(description="The API key, for clients that cannot set headers.")] = None,
) -> None:
    """``Authenticated`` for a WebSocket: the bearer header, or ``?token=`` (browsers cannot set headers there)."""
    expected: str | None = websocket.app.state.api_key
    if expected is None:
        return
    given = credentials.credentials if credentials is not None else (token or "")
    if not hmac.compare_digest(given.encode(), expected.encode()):
        log.warning(
            "refused WebSocket %s from %s: %s API key",
            websocket.url.path,
            websocket.client.host if websocket.client else "?",
            "wrong" if given else "no",
        )
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, "missing or wrong API key", headers={"WWW-Authenticate": "Bearer"}
        )


@router.websocket("/ws", dependencies=[Depends(_require_api_key_ws)])
async def event_socket(websocket: WebSocket) -> None:
    """Live events as WebSocket text messages (the event JSON), filtered by the query parameters camera, type and
    since (events since then are sent first). Bad parameters are refused with 422 before the upgrade."""
    try:
        filters = EventFilters.model_validate(dict(websocket.query_params))
    except ValidationError as err:
        raise request_error(err, "query") from None
    server: ServerApi = websocket.app.state.server
    records, after = await run_in_threadpool(_start, server.bus, filters, None, ("query", "since"))
    await websocket.accept()
    closed = asyncio.create_task(_until_disconnect(websocket))
    try:
        for record in records:
            await websocket.send_text(record.event.to_json())
        async with contextlib.aclosing(_follow(server.bus, filters, after, closed)) as live:
            async for item in live:
                if item is not None:
                    await websocket.send_text(item.event.to_json())
    except WebSocketDisconnect:
        pass
    finally:
        closed.cancel()


@router.get(
    "/{event_id}/snapshot.jpg",
    response_class=JPEGResponse,
    dependencies=[Authenticated],
    summary="The frame an event was decided on, its box drawn",
    responses={
        200: {"content": {"image/jpeg": {"schema": {"type": "string", "format": "binary"}}}, "description": "JPEG"},
        404: {"model": Message, "description": "Unknown event, one without a box, or its snapshot expired."},
    },
)
def event_snapshot(
    event_id: Annotated[str, Path(pattern=EVENT_ID_PATTERN, description="The event's id.")], server: ServerDep
) -> JPEGResponse:
    jpeg = server.snapshots.get(event_id)
    if jpeg is None:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND,
            f"no snapshot for event {event_id}: unknown, an event without a box, or older than "
            f"events.snapshot_retention_s / pushed out by the snapshot bounds",
        )
    # An event's snapshot never changes, so a browser may keep it as long as the server would.
    return JPEGResponse(jpeg, headers={"Cache-Control": f"private, max-age={int(server.snapshots.max_age_s)}"})


def _invalid(loc: Sequence[str], msg: str, value: object) -> NoReturn:
    """A 422 like FastAPI's own, for checks a model cannot make alone."""
    raise RequestValidationError([{"type": "value_error", "loc": tuple(loc), "msg": msg, "input": value}])


def _start(
    bus: EventBus, filters: EventFilters, after: str | None, loc: Sequence[str]
) -> tuple[list[EventRecord], str | None]:
    """Events to send before the live ones, and the cursor to follow the bus from.

    Runs in a worker thread: with Redis these are network reads, and the stream should start from a cursor
    found here rather than have the subscription look for one on the event loop.
    """
    try:
        if after is not None:
            bus.history(after=after, limit=1)  # only to refuse a cursor of another bus before the stream opens
            return [], after
        limit = REPLAY_MAX if filters.since is not None else 0
        return catch_up(bus, camera_id=filters.camera, type=filters.type, since=filters.since, limit=limit)
    except EventBusUnavailable as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc)) from None
    except _FOREIGN_CURSOR:
        _invalid(loc, "not a cursor of this server's events", after)


async def _follow(
    bus: EventBus, filters: EventFilters, after: str | None, closed: asyncio.Future[Any] | None = None
) -> AsyncGenerator[EventRecord | None, None]:
    """Matching events as the bus delivers them, and None after each ``SSE_KEEPALIVE_S`` without one; until
    ``closed``, when given, is done."""
    events = listen(bus, camera_id=filters.camera, types=[filters.type] if filters.type else None, after=after)
    watched = {closed} if closed is not None else set()
    pending: asyncio.Task[EventRecord] | None = None
    try:
        while True:
            if pending is None:
                pending = asyncio.create_task(_next(events))
            await asyncio.wait({pending, *watched}, timeout=SSE_KEEPALIVE_S, return_when=asyncio.FIRST_COMPLETED)
            if closed is not None and closed.done():
                return
            if pending.done():
                record, pending = pending.result(), None
                yield record
            else:
                yield None
    finally:
        # Cancelling the pending read ends the listener, which closes its bus subscription.
        if pending is not None:
            pending.cancel()
            with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                await pending
        await events.aclose()


async def _next(events: AsyncIterator[EventRecord]) -> EventRecord:
    return await anext(events)


async def _sse(
    bus: EventBus, filters: EventFilters, records: list[EventRecord], after: str | None, shutdown: asyncio.Event
) -> AsyncIterator[str]:
    # No disconnect watch of our own: Starlette cancels this generator as soon as the client leaves. Shutdown
    # cancels nothing, so the stream ends itself then: the client gets a complete body (and an EventSource
    # reconnects after `retry`, resuming from its Last-Event-ID). The first bytes go out at once, so the client
    # sees the stream open before any event.
    yield f": streamsrv events\nretry: {SSE_RETRY_MS}\n\n"
    for record in records:
        yield _sse_message(record)
    ended = asyncio.create_task(shutdown.wait())
    try:
        async with contextlib.aclosing(_follow(bus, filters, after, ended)) as live:
            async for item in live:
                yield ": keep-alive\n\n" if item is None else _sse_message(item)
    finally:
        ended.cancel()


def _sse_message(record: EventRecord) -> str:
    return f"id: {record.cursor}\ndata: {record.event.to_json()}\n\n"


async def _until_disconnect(websocket: WebSocket) -> None:
    # Clients send nothing; reading is how a closed connection is noticed while no event is due.
    while (await websocket.receive())["type"] != "websocket.disconnect":
        pass
