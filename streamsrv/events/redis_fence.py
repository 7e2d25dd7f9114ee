"""Fenced event writes (cluster mode): an event is written only while its camera's lease holds the writer's token.

In cluster mode every camera is run by the node holding its lease (``streamsrv.cluster.leases``). A node that
stalled (paused, swapped out, cut off) past its lease may still hold events for a camera that another node now
runs. Each event is therefore written by a script that first checks, atomically with the XADD, that the camera's
lease key still holds the value this node acquired; otherwise the write is refused and counted
(``BusStats.refused_stale``, ``streamsrv_event_bus_refused_stale``), never silently dropped.

The camera's sequence number is kept in Redis across owners (``seq_key``): the script skips an event whose seq is
not above it, so a retried batch never adds an event twice, and a new owner continues the camera's sequence from
it (docs/events.md).

Example:
    >>> bus = RedisBus(url, fence=lambda event: Fence("lease:door", "7:gpu-0:1700000000000", "seq:door"))
    ... # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from streamsrv.events.model import Event

# KEYS: stream, camera seq key, lease key. ARGV: seq, json, maxlen, channel, camera channel, camera_id, type, lease.
# -> 1 written, 0 already there (a retry), -1 refused: the lease is not ours (any more).
FENCED_DELIVER = """
if redis.call('GET', KEYS[3]) ~= ARGV[8] then return -1 end
local last = redis.call('GET', KEYS[2])
if last and tonumber(last) >= tonumber(ARGV[1]) then return 0 end
redis.call('SET', KEYS[2], ARGV[1])
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], '*', 'camera_id', ARGV[6], 'type', ARGV[7], 'event', ARGV[2])
redis.call('PUBLISH', ARGV[4], ARGV[2])
redis.call('PUBLISH', ARGV[5], ARGV[2])
return 1
"""
REFUSED = -1


@dataclass(frozen=True, slots=True)
class Fence:
    """What a camera's events are checked against: its lease key and the value this node holds there, and the key
    of the camera's last sequence number."""

    lease_key: str
    lease_value: str
    seq_key: str


FenceLookup = Callable[[Event], Fence | None]
"""event -> its camera's fence now, or None when this node does not hold the lease the event was made under (the
write is refused): a node that lost a camera and took it back must not write what the old run made meanwhile."""
