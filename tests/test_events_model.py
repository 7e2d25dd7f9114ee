"""The event wire format, its documented schema, the in-process bus and the snapshot store."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pydantic import ValidationError

from streamsrv.config.models import EventsConfig
from streamsrv.events import (
    Event,
    EventRecord,
    EventSequencer,
    InProcessBus,
    SnapshotStore,
    create_bus,
    event_json_schema,
    listen,
)
from tests.support.buses import SubscribeSignal

DOCS = Path(__file__).resolve().parents[1] / "docs" / "events.md"
TRACK = {"track_id": 3, "label": "person", "confidence": 0.87654321, "bbox": (1.123456, 2.0, 30.5, 40.25)}


def cross(seqr: EventSequencer, ts: float = 1.7e9) -> Event:
    return seqr.make("line.cross", ts, line="gate", direction="in", **TRACK)


def test_json_round_trip_keeps_every_key_and_rounds_floats() -> None:
    e = cross(EventSequencer("door", run_id="r1"))
    data = json.loads(e.to_json())
    assert list(data) == list(Event.model_fields)
    assert data["schema_version"] == 1 and data["seq"] == 1 and data["run_id"] == "r1"
    assert data["bbox"] == [1.12, 2.0, 30.5, 40.25] and data["confidence"] == 0.8765 and data["zone"] is None
    assert Event.from_json(e.to_json()) == e


def test_each_type_requires_its_own_fields() -> None:
    seqr = EventSequencer("door")
    with pytest.raises(ValidationError, match=r"zone\.exit event needs dwell_s"):
        seqr.make("zone.exit", 1.0, zone="z", **TRACK)
    with pytest.raises(ValidationError, match=r"line\.cross event needs line, direction"):
        seqr.make("line.cross", 1.0, **TRACK)
    assert seqr.make("camera.offline", 1.0).track_id is None
    assert seqr.next_seq == 2  # failed events take no number, so the sequence stays gap-free


def test_readers_ignore_unknown_fields_but_reject_another_schema_version() -> None:
    data = json.loads(cross(EventSequencer("door")).to_json())
    assert Event.model_validate({**data, "added_in_v1_5": 1}).seq == 1
    with pytest.raises(ValidationError):
        Event.model_validate({**data, "schema_version": 2})


def test_sequence_numbers_let_a_consumer_find_gaps_and_restarts() -> None:
    first, second = EventSequencer("door"), EventSequencer("door")
    events = [cross(first) for _ in range(5)] + [cross(second) for _ in range(2)]
    received = events[:2] + events[3:]  # #3 of the first run lost
    last: dict[str, int] = {}
    gaps = []
    for e in received:
        if e.seq != last.get(e.run_id, 0) + 1:
            gaps.append((e.run_id, last.get(e.run_id, 0) + 1, e.seq - 1))
        last[e.run_id] = e.seq
    assert gaps == [(first.run_id, 3, 3)]


def test_the_documented_schema_is_the_exported_one_and_validates_events() -> None:
    block = re.search(r"```json\n(\{\n  \"\$schema\".*?)\n```", DOCS.read_text(), re.S)
    assert block is not None, "docs/events.md lost its schema block"
    schema = event_json_schema()
    assert json.loads(block.group(1)) == schema
    jsonschema_rs = pytest.importorskip("jsonschema_rs")
    validator = jsonschema_rs.validator_for(schema)
    seqr = EventSequencer("door")
    validator.validate(json.loads(cross(seqr).to_json()))
    validator.validate(json.loads(seqr.make("camera.online", 1.0).to_json()))
    broken = {**json.loads(cross(seqr).to_json()), "line": None}
    assert not validator.is_valid(broken)


# --- in-process bus ------------------------------------------------------------------------------------------


def test_in_process_bus_history_filters_and_bounds() -> None:
    bus = InProcessBus(history_size=5)
    door, yard = EventSequencer("door"), EventSequencer("yard")
    for i in range(4):
        bus.publish(cross(door, ts=100.0 + i))
        bus.publish(yard.make("camera.online", 100.0 + i))
    assert [r.event.seq for r in bus.history(camera_id="door")] == [3, 4]  # 5 kept in all, 2 of them door's
    assert [r.event.type for r in bus.history(type="camera.online", limit=2)] == ["camera.online"] * 2
    assert [r.event.ts for r in bus.history(since=103.0)] == [103.0, 103.0]
    first = bus.history()[0]
    assert [r.cursor for r in bus.history(after=first.cursor, limit=2)] == [
        str(int(first.cursor) + 1),
        str(int(first.cursor) + 2),
    ]
    stats = bus.stats()
    assert (stats.accepted, stats.published, stats.dropped, stats.redis_connected) == (8, 8, 0, None)


def test_in_process_subscribers_get_catch_up_then_live_in_order_and_survive_a_broken_one() -> None:
    bus = InProcessBus()
    seqr = EventSequencer("door")
    for _ in range(3):
        bus.publish(cross(seqr))
    seen: list[int] = []

    def broken(_: EventRecord) -> None:
        raise RuntimeError("subscriber bug")

    bus.subscribe(broken)
    sub = bus.subscribe(lambda r: seen.append(r.event.seq), camera_id="door", after=bus.history()[0].cursor)
    bus.publish(cross(seqr))
    bus.publish(EventSequencer("yard").make("camera.online", 1.0))
    sub.close()
    bus.publish(cross(seqr))
    assert seen == [2, 3, 4]


def test_listen_is_an_async_iterator_fed_from_other_threads() -> None:
    bus = InProcessBus()
    seqr = EventSequencer("door")

    def publish_three() -> None:
        for _ in range(3):
            bus.publish(cross(seqr))

    async def main() -> list[int]:
        got: list[int] = []
        signalling = SubscribeSignal(bus)
        stream = listen(signalling, types=["line.cross"])
        reader = asyncio.ensure_future(_take(stream, 3, got))
        assert await asyncio.to_thread(signalling.subscribed.wait, 5), "listen never subscribed"
        await asyncio.to_thread(publish_three)
        await asyncio.wait_for(reader, 2)
        await stream.aclose()
        return got

    assert asyncio.run(main()) == [1, 2, 3]
    assert bus.stats().subscribers == 0


async def _take(stream: AsyncIterator[EventRecord], n: int, into: list[int]) -> None:
    async for record in stream:
        into.append(record.event.seq)
        if len(into) == n:
            return


def test_create_bus_without_redis_is_in_process() -> None:
    assert isinstance(create_bus(EventsConfig()), InProcessBus)


# --- snapshots ------------------------------------------------------------------------------------------------


def test_snapshot_store_is_bounded_by_count_bytes_and_age() -> None:
    now = [0.0]
    store = SnapshotStore(max_count=3, max_bytes=100, max_age_s=10.0, clock=lambda: now[0])
    for i in range(4):
        store.put(f"{i}" * 32, b"x" * 10)
    assert store.get("0" * 32) is None and len(store) == 3  # count
    store.put("big" + "0" * 29, b"y" * 95)
    assert len(store) == 1 and store.stats().bytes == 95  # bytes: the three older ones went
    assert not store.put("huge" + "0" * 28, b"z" * 101) and store.stats().rejected == 1
    now[0] = 10.5
    assert store.get("big" + "0" * 29) is None and len(store) == 0  # age
    assert store.stats().evicted == 5
