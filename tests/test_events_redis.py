"""Delivery through a real redis-server (started by the `redis_server` fixture on a free port): pub/sub and the
stream get every event; Redis killed and restarted mid-run loses nothing and duplicates nothing; the buffer
bound drops (and counts) the oldest; history, cursors and subscriptions read the stream."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from contextlib import closing
from typing import Any

import pytest
import redis

from streamsrv.events import EventRecord, listen
from streamsrv.events.model import Event, EventSequencer
from streamsrv.events.redis_bus import RedisBus
from tests.support.buses import SubscribeSignal
from tests.support.processes import RedisServer
from tests.support.waiting import wait_for

TRACK = {"track_id": 1, "label": "person", "confidence": 0.9, "bbox": (1.0, 2.0, 3.0, 4.0)}


def cross(seqr: EventSequencer, ts: float = 1.7e9) -> Event:
    return seqr.make("line.cross", ts, line="gate", direction="in", **TRACK)


@pytest.fixture
def bus(redis_server: RedisServer) -> Iterator[RedisBus]:
    b = RedisBus(redis_server.url, backoff_max_s=0.2)
    yield b
    b.close(timeout_s=1.0)


def stream_id(cursor: str) -> tuple[int, int]:
    """A Redis stream ID ("<ms>-<n>") as numbers: as strings, "...-10" sorts before "...-9"."""
    ms, _, n = cursor.partition("-")
    return int(ms), int(n)


def stream_seqs(url: str) -> list[tuple[str, int]]:
    client = redis.Redis.from_url(url)
    try:
        entries: Any = client.xrange("streamsrv:events")
        events = [json.loads(fields[b"event"]) for _, fields in entries]
        return [(e["camera_id"], e["seq"]) for e in events]
    finally:
        client.close()


def test_pubsub_channels_and_the_stream_all_receive_every_event(redis_server: RedisServer, bus: RedisBus) -> None:
    client = redis.Redis.from_url(redis_server.url)
    pubsub = client.pubsub()
    pubsub.subscribe("streamsrv:events", "streamsrv:events:door")
    assert pubsub.get_message(timeout=1) is not None and pubsub.get_message(timeout=1) is not None  # subscribed
    door, yard = EventSequencer("door"), EventSequencer("yard")
    for _ in range(100):
        bus.publish(cross(door))
        bus.publish(cross(yard))
    assert bus.flush(5.0)
    got: dict[str, list[tuple[str, int]]] = {"streamsrv:events": [], "streamsrv:events:door": []}
    deadline = time.monotonic() + 5
    while sum(map(len, got.values())) < 300 and time.monotonic() < deadline:
        msg = pubsub.get_message(timeout=0.5)
        if msg and msg["type"] == "message":
            event = Event.from_json(msg["data"])
            got[msg["channel"].decode()].append((event.camera_id, event.seq))
    everything = [(cam, seq) for seq in range(1, 101) for cam in ("door", "yard")]
    assert got["streamsrv:events"] == everything
    assert got["streamsrv:events:door"] == [("door", seq) for seq in range(1, 101)]
    assert stream_seqs(redis_server.url) == everything
    stats = bus.stats()
    assert (stats.accepted, stats.published, stats.buffered, stats.dropped) == (200, 200, 0, 0)
    assert stats.redis_connected is True
    pubsub.close()
    client.close()


def test_redis_killed_and_restarted_mid_run_every_event_arrives_once_in_order(redis_server: RedisServer) -> None:
    publisher = RedisBus(redis_server.url, backoff_max_s=0.2)
    reader = RedisBus(redis_server.url, backoff_max_s=0.2)
    received: list[tuple[str, int]] = []
    reader.subscribe(lambda r: received.append((r.event.run_id, r.event.seq)), camera_id="door")
    seqr = EventSequencer("door")
    total = 600
    published = threading.Event()

    def produce() -> None:
        for _ in range(total):
            publisher.publish(cross(seqr))
            time.sleep(0.004)
        published.set()

    producer = threading.Thread(target=produce)
    producer.start()
    try:
        wait_for(lambda: len(received) >= 150, 10, "events before the kill", interval_s=0.01)
        redis_server.kill()
        wait_for(lambda: publisher.stats().redis_connected is False, 10, "the publisher to notice", interval_s=0.01)
        wait_for(lambda: publisher.stats().buffered >= 50, 10, "events to buffer during the outage", interval_s=0.01)
        redis_server.start()
        published.wait(30)
        assert publisher.flush(10.0)
        # A marker published after everything: the stream is ordered, so once it arrives anything extra (a
        # duplicate) has arrived before it.
        marker = EventSequencer("door")
        with closing(RedisBus(redis_server.url)) as marker_bus:
            marker_bus.publish(cross(marker))
            assert marker_bus.flush(10.0)
        wait_for(lambda: (marker.run_id, 1) in received, 10, "the marker after the last event", interval_s=0.01)
    finally:
        producer.join()
        publisher.close(timeout_s=1.0)
        reader.close(timeout_s=1.0)
    assert received == [(seqr.run_id, seq) for seq in range(1, total + 1)] + [(marker.run_id, 1)]
    stats = publisher.stats()
    assert (stats.accepted, stats.published, stats.dropped, stats.buffered) == (total, total, 0, 0)
    assert stats.reconnects == 1 and stats.last_error is not None


def test_past_the_buffer_bound_the_oldest_are_dropped_and_counted(redis_server: RedisServer) -> None:
    redis_server.kill()
    bus = RedisBus(redis_server.url, buffer_max_events=50, backoff_max_s=0.2)
    try:
        seqr = EventSequencer("door")
        for _ in range(80):
            bus.publish(cross(seqr))
        stats = bus.stats()
        assert (stats.accepted, stats.buffered, stats.dropped, stats.redis_connected) == (80, 50, 30, False)
        redis_server.start()
        assert bus.flush(10.0)
    finally:
        bus.close(timeout_s=1.0)
    seqs = [seq for _, seq in stream_seqs(redis_server.url)]
    # What survived is in order and ends with the newest; the 30 lost show as gaps in seq.
    assert len(seqs) == 50 and seqs == sorted(seqs) and seqs[-1] == 80
    assert bus.stats().published == 50
    bus.publish(cross(seqr))  # after close: counted, not silently kept
    assert bus.stats().dropped == 31


def test_a_retried_batch_is_not_added_twice(redis_server: RedisServer, bus: RedisBus) -> None:
    seqr = EventSequencer("door")
    events = [cross(seqr) for _ in range(5)]
    for e in events[:3]:
        bus.publish(e)
    assert bus.flush()
    bus._deliver(events)  # as if the replies to the first three had been lost and the batch were re-sent
    assert [seq for _, seq in stream_seqs(redis_server.url)] == [1, 2, 3, 4, 5]


def test_history_reads_the_stream_with_filters_and_cursors(bus: RedisBus) -> None:
    door, yard = EventSequencer("door"), EventSequencer("yard")
    for i in range(30):
        bus.publish(cross(door, ts=1000.0 + i))
        bus.publish(yard.make("camera.online", 1000.0 + i))
    assert bus.flush()
    newest = bus.history(camera_id="door", limit=5)
    assert [r.event.seq for r in newest] == [26, 27, 28, 29, 30]
    assert [r.event.seq for r in bus.history(type="camera.online", since=1027.0)] == [28, 29, 30]
    after = bus.history(camera_id="door", after=newest[0].cursor, limit=3)
    assert [r.event.seq for r in after] == [27, 28, 29]
    assert all(stream_id(r.cursor) > stream_id(newest[0].cursor) for r in after)


def test_subscribers_catch_up_from_a_cursor_then_follow_live(bus: RedisBus) -> None:
    seqr = EventSequencer("door")
    for _ in range(5):
        bus.publish(cross(seqr))
    assert bus.flush()
    cursor = bus.history(limit=5)[1].cursor  # the 2nd event
    seen: list[int] = []
    sub = bus.subscribe(lambda r: seen.append(r.event.seq), after=cursor)
    bus.publish(cross(seqr))
    wait_for(lambda: len(seen) == 4, 10, "catch-up and live events", interval_s=0.01)
    sub.close()
    assert seen == [3, 4, 5, 6]


def test_listen_over_redis(bus: RedisBus) -> None:
    seqr = EventSequencer("door")

    async def main() -> list[EventRecord]:
        signalling = SubscribeSignal(bus)
        stream = listen(signalling, camera_id="door")
        first = asyncio.ensure_future(anext(stream))
        # listen subscribes "from now" when first asked for an event: publish only once it has.
        assert await asyncio.to_thread(signalling.subscribed.wait, 5), "listen never subscribed"
        await asyncio.to_thread(bus.publish, cross(seqr))
        record = await asyncio.wait_for(first, 5)
        await stream.aclose()
        return [record]

    assert [r.event.seq for r in asyncio.run(main())] == [1]
