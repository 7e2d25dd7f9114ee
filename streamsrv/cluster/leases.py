"""Camera leases in Redis: who runs a camera, until when, under which fencing token.

A lease is the key ``lease_key(camera)`` holding ``<token>:<node id>:<since ms>`` with a time to live. It is taken
with ``SET NX PX`` and renewed and released by compare-and-set scripts, so only its holder can extend or drop it.
Each acquisition takes a new **fencing token** from ``INCR token_key(camera)``; the acquirer also passes the
highest token it has seen for the camera as a floor, so tokens keep growing even after a Redis restart without
persistence wiped the counter. Event writes check the token (``streamsrv.events.redis_fence``).

Example:
    >>> leases = Leases(redis.Redis(), "gpu-0", lease_s=10)  # doctest: +SKIP
    >>> lease = leases.acquire("door", floor=0)  # doctest: +SKIP
    >>> leases.renew([lease])  # doctest: +SKIP
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import redis

from streamsrv.cluster.keys import lease_key, token_key

# KEYS: lease, token. ARGV: node id, ttl ms, floor, since ms. -> {1, value} when taken, {0, holder's value} if held.
_ACQUIRE = """
local held = redis.call('GET', KEYS[1])
if held then return {0, held} end
local token = redis.call('INCR', KEYS[2])
local floor = tonumber(ARGV[3])
if token <= floor then
  token = floor + 1
  redis.call('SET', KEYS[2], token)
end
local value = token .. ':' .. ARGV[1] .. ':' .. ARGV[4]
if not redis.call('SET', KEYS[1], value, 'NX', 'PX', ARGV[2]) then return {0, ''} end
return {1, value}
"""
# KEYS: lease. ARGV: value, ttl ms. -> 1 renewed, 0 not ours (any more).
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
# KEYS: lease. ARGV: value. -> 1 released, 0 not ours.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@dataclass(frozen=True, slots=True)
class LeaseValue:
    """A lease as stored: the fencing token, its holder, and since when it holds it (epoch seconds)."""

    token: int
    node: str
    since: float

    @property
    def raw(self) -> str:
        return f"{self.token}:{self.node}:{round(self.since * 1000)}"

    @classmethod
    def parse(cls, raw: bytes | str | None) -> LeaseValue | None:
        """None for a missing or unreadable value.

        >>> LeaseValue.parse(b"7:gpu-0:1700000000000")
        LeaseValue(token=7, node='gpu-0', since=1700000000.0)
        """
        if raw is None:
            return None
        text = raw.decode() if isinstance(raw, bytes) else raw
        token, _, rest = text.partition(":")
        node, _, since = rest.rpartition(":")
        try:
            return cls(int(token), node, int(since) / 1000)
        except ValueError:
            return None


@dataclass(frozen=True, slots=True)
class Lease:
    """A lease this node holds, and the local monotonic time past which it must assume it lost it."""

    camera_id: str
    value: LeaseValue
    deadline: float


class Leases:
    """Acquires, renews and releases this node's camera leases."""

    def __init__(self, client: redis.Redis, node_id: str, lease_s: float) -> None:
        self.client, self.node_id, self.lease_s = client, node_id, lease_s
        self._acquire = client.register_script(_ACQUIRE)
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)

    @property
    def ttl_ms(self) -> int:
        return round(self.lease_s * 1000)

    def acquire(self, camera_id: str, floor: int) -> Lease | LeaseValue | None:
        """The new lease, else the holder's lease value (None if unreadable). ``floor``: the highest token seen."""
        sent = time.monotonic()  # the deadline counts from before the request: Redis's clock started after it
        taken, value = self._acquire(
            keys=[lease_key(camera_id), token_key(camera_id)],
            args=[self.node_id, self.ttl_ms, floor, round(time.time() * 1000)],
        )
        parsed = LeaseValue.parse(value or None)
        if taken and parsed is not None:
            return Lease(camera_id, parsed, sent + self.lease_s)
        return parsed

    def renew(self, leases: list[Lease]) -> dict[str, Lease | None]:
        """Renew in one round trip: camera -> the lease with its new deadline, or None if it is no longer ours."""
        if not leases:
            return {}
        sent = time.monotonic()
        pipe = self.client.pipeline(transaction=False)
        for lease in leases:
            self._renew(keys=[lease_key(lease.camera_id)], args=[lease.value.raw, self.ttl_ms], client=pipe)
        replies = pipe.execute()
        return {
            lease.camera_id: Lease(lease.camera_id, lease.value, sent + self.lease_s) if ok else None
            for lease, ok in zip(leases, replies, strict=True)
        }

    def release(self, leases: list[Lease]) -> int:
        """Drop leases (only while still ours); how many were."""
        if not leases:
            return 0
        pipe = self.client.pipeline(transaction=False)
        for lease in leases:
            self._release(keys=[lease_key(lease.camera_id)], args=[lease.value.raw], client=pipe)
        return sum(int(r) for r in pipe.execute())

    def seconds_left(self, keys: list[str]) -> list[float]:
        """Each key's time to live in seconds, in one round trip (0 for a key that is gone or never expires)."""
        if not keys:
            return []
        pipe = self.client.pipeline(transaction=False)
        for key in keys:
            pipe.pttl(key)
        return [max(0, int(ms)) / 1000 for ms in pipe.execute()]

    def holders(self, camera_ids: list[str]) -> dict[str, LeaseValue | None]:
        """Every camera's current lease (None when free), in one MGET."""
        if not camera_ids:
            return {}
        values = self.client.mget([lease_key(c) for c in camera_ids])
        return {c: LeaseValue.parse(v) for c, v in zip(camera_ids, values, strict=True)}
