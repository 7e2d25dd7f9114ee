"""Camera leases on a real redis-server: exclusive, renewed and released only by their holder, tokens only grow."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import redis

from streamsrv.cluster.keys import lease_key, token_key
from streamsrv.cluster.leases import Lease, Leases, LeaseValue
from tests.support.processes import RedisServer


@pytest.fixture
def client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(redis_server.url)
    yield c
    c.close()


def test_one_holder_at_a_time_and_tokens_grow(client: redis.Redis) -> None:
    a, b = Leases(client, "a", lease_s=5), Leases(client, "b", lease_s=5)
    first = a.acquire("door", floor=0)
    assert isinstance(first, Lease) and first.value.node == "a" and first.value.token == 1
    held = b.acquire("door", floor=0)
    assert held == first.value  # b learns who holds it
    assert b.release([Lease("door", LeaseValue(1, "b", first.value.since), time.monotonic() + 5)]) == 0
    assert b.renew([Lease("door", LeaseValue(1, "b", first.value.since), time.monotonic() + 5)]) == {"door": None}
    assert a.release([first]) == 1
    second = b.acquire("door", floor=0)
    assert isinstance(second, Lease) and second.value.token == 2 and second.value.node == "b"
    assert a.renew([first]) == {"door": None}  # a's old lease is gone for good
    assert b.holders(["door", "gate"]) == {"door": second.value, "gate": None}


def test_renewal_extends_and_expiry_frees(client: redis.Redis) -> None:
    a, b = Leases(client, "a", lease_s=1), Leases(client, "b", lease_s=1)
    lease = a.acquire("door", floor=0)
    assert isinstance(lease, Lease)
    assert lease.deadline <= time.monotonic() + 1
    for _ in range(3):
        time.sleep(0.5)
        renewed = a.renew([lease])["door"]
        assert renewed is not None and renewed.deadline > lease.deadline
        lease = renewed
    assert isinstance(b.acquire("door", floor=0), LeaseValue)
    time.sleep(1.2)  # not renewed: it expires
    taken = b.acquire("door", floor=0)
    assert isinstance(taken, Lease) and taken.value.token == 2


def test_tokens_keep_growing_across_a_redis_restart_without_persistence(
    redis_server: RedisServer, client: redis.Redis
) -> None:
    a = Leases(client, "a", lease_s=5)
    for _ in range(3):
        lease = a.acquire("door", floor=0)
        assert isinstance(lease, Lease)
        a.release([lease])
    assert lease.value.token == 3
    redis_server.restart()  # no persistence: every key is gone
    client.connection_pool.disconnect()
    assert client.get(token_key("door")) is None
    again = a.acquire("door", floor=lease.value.token)  # the highest token this node has seen
    assert isinstance(again, Lease) and again.value.token == 4
    assert LeaseValue.parse(client.get(lease_key("door"))) == again.value


def test_lease_value_parses_node_ids_with_dots_and_dashes() -> None:
    v = LeaseValue(12, "gpu-0.rack.a", 1700000000.5)
    assert LeaseValue.parse(v.raw) == v
    assert LeaseValue.parse(b"garbage") is None and LeaseValue.parse(None) is None


def test_seconds_left_reads_redis_clock(client: redis.Redis) -> None:
    a = Leases(client, "a", lease_s=2)
    assert isinstance(a.acquire("door", floor=0), Lease)
    left = a.seconds_left([lease_key("door"), lease_key("nobody")])
    assert 1.0 < left[0] <= 2.0 and left[1] == 0
    assert a.seconds_left([]) == []
