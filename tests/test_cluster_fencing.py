"""Fenced event writes on a real redis-server: a stale owner's events are refused and counted; the camera's sequence
continues across owners and a retried or repeated event is written once."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import redis

from streamsrv.cluster.keys import lease_key, seq_key
from streamsrv.cluster.leases import Lease, Leases
from streamsrv.events.model import Event, EventSequencer
from streamsrv.events.redis_bus import RedisBus
from streamsrv.events.redis_fence import Fence
from tests.support.processes import RedisServer


@pytest.fixture
def client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(redis_server.url)
    yield c
    c.close()


def fence_of(lease_value: str) -> Callable[[Event], Fence]:
    return lambda e: Fence(lease_key(e.camera_id), lease_value, seq_key(e.camera_id))


def stream_seqs(client: redis.Redis, camera_id: str = "door") -> list[tuple[str, int]]:
    out = []
    for _, fields in client.xrange("streamsrv:events"):
        e = Event.from_json(fields[b"event"])
        if e.camera_id == camera_id:
            out.append((e.run_id, e.seq))
    return out


def test_stale_owner_is_refused_and_counted_new_owner_continues(redis_server: RedisServer, client: redis.Redis) -> None:
    held: dict[str, Fence | None] = {}
    a_lease = Leases(client, "a", lease_s=30).acquire("door", floor=0)
    assert isinstance(a_lease, Lease)
    held["a"] = Fence(lease_key("door"), a_lease.value.raw, seq_key("door"))
    bus_a = RedisBus(redis_server.url, fence=lambda event: held["a"])
    seq_a = EventSequencer("door", run_id="a-1")
    for _ in range(3):
        bus_a.publish(seq_a.make("camera.online", ts=1.0))
    assert bus_a.flush()
    assert bus_a.stats().published == 3 and bus_a.stats().refused_stale == 0

    # b takes over (a's lease expired while it stalled): a still believes it owns the camera
    client.delete(lease_key("door"))
    b_lease = Leases(client, "b", lease_s=30).acquire("door", floor=a_lease.value.token)
    assert isinstance(b_lease, Lease) and b_lease.value.token > a_lease.value.token
    last = int(client.get(seq_key("door")) or 0)
    assert last == 3
    bus_b = RedisBus(redis_server.url, fence=fence_of(b_lease.value.raw))
    seq_b = EventSequencer("door", run_id="b-2", first_seq=last + 1)
    bus_b.publish(seq_b.make("camera.online", ts=2.0))
    for _ in range(2):
        bus_a.publish(seq_a.make("camera.offline", ts=2.5))  # the stale owner's writes
    assert bus_a.flush() and bus_b.flush()
    assert bus_a.stats().refused_stale == 2 and bus_a.stats().published == 3
    assert stream_seqs(client) == [("a-1", 1), ("a-1", 2), ("a-1", 3), ("b-2", 4)]

    # a node that knows it lost the lease refuses before writing; counted too
    held["a"] = None
    bus_a.publish(seq_a.make("camera.offline", ts=3.0))
    assert bus_a.flush()
    assert bus_a.stats().refused_stale == 3
    bus_a.close()
    bus_b.close()


def test_a_repeated_event_is_written_once(redis_server: RedisServer, client: redis.Redis) -> None:
    lease = Leases(client, "a", lease_s=30).acquire("door", floor=0)
    assert isinstance(lease, Lease)
    bus = RedisBus(redis_server.url, fence=fence_of(lease.value.raw))
    seq = EventSequencer("door", run_id="a-1")
    event = seq.make("camera.online", ts=1.0)
    bus.publish(event)
    bus.publish(event)  # as a retried batch would
    bus.publish(seq.make("camera.offline", ts=2.0))
    assert bus.flush()
    assert stream_seqs(client) == [("a-1", 1), ("a-1", 2)]
    assert bus.stats().refused_stale == 0
    bus.close()
