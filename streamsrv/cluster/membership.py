"""Node membership: each node's heartbeat key (with a time to live) and the info it publishes about itself.

A node is alive while ``node_key(id)`` exists; it holds the node's instance id (random per process) and is renewed
every ``lease_s / 3``. Beside it, the hash ``NODES`` keeps each node's info (URL, capacity, cameras, load, when
seen), so a dead node still shows with its ``last_seen_s``. A second process with a live node's id is refused:
the heartbeat script will not overwrite another instance's key.

Example:
    >>> members = Membership(client, "gpu-0", lease_s=10)  # doctest: +SKIP
    >>> members.check_clash(); members.beat(NodeInfo("gpu-0", "http://10.0.0.7:8080"))  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

import redis

from streamsrv.cluster.keys import CHANGES, NODES, node_key
from streamsrv.errors import StreamsrvError

log = logging.getLogger(__name__)
_FORGET_DEAD_AFTER_S = 3600.0  # a dead node stays listed (alive: false) this long

# KEYS: node key, NODES. ARGV: instance, ttl ms, node id, info JSON, channel. -> 1, or 0 if another instance holds it.
_BEAT = """
local cur = redis.call('GET', KEYS[1])
if cur and cur ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('HSET', KEYS[2], ARGV[3], ARGV[4])
if not cur then redis.call('PUBLISH', ARGV[5], 'join ' .. ARGV[3]) end
return 1
"""
# KEYS: node key. ARGV: instance, channel, node id.
_LEAVE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('PUBLISH', ARGV[2], 'leave ' .. ARGV[3])
end
return 1
"""


class NodeIdClash(StreamsrvError):
    """Another live node already uses this node_id."""


@dataclass(slots=True)
class NodeInfo:
    """What a node says about itself in its heartbeat; ``states``: camera -> state, for the other nodes' lists."""

    id: str
    url: str
    capacity: int | None = None
    cameras: list[str] = field(default_factory=list)
    states: dict[str, str] = field(default_factory=dict)
    processed_fps: float = 0.0
    inference_busy: float = 0.0
    ts: float = 0.0
    alive: bool = False

    @classmethod
    def from_json(cls, raw: bytes | str) -> NodeInfo | None:
        try:
            data: dict[str, Any] = json.loads(raw)
            known = {k: data[k] for k in cls.__dataclass_fields__ if k in data and k != "alive"}
            return cls(**known)
        except (ValueError, TypeError):
            return None

    def to_json(self) -> str:
        data = asdict(self)
        data.pop("alive")
        return json.dumps(data, separators=(",", ":"))


class Membership:
    """This node's heartbeat, and every node's view."""

    def __init__(self, client: redis.Redis, node_id: str, lease_s: float) -> None:
        self.client, self.node_id, self.lease_s = client, node_id, lease_s
        self.instance = uuid.uuid4().hex
        self._beat = client.register_script(_BEAT)
        self._leave = client.register_script(_LEAVE)

    def check_clash(self, poll_s: float = 0.2) -> None:
        """Raise ``NodeIdClash`` if a live process heartbeats this node id; wait out the key of a dead one.

        A node restarted right after a crash finds its old key still there: it waits until the key either
        expires (the old process is dead) or is renewed (it is alive: a clash), at most ``lease_s``.
        """
        key = node_key(self.node_id)
        deadline = time.monotonic() + self.lease_s + 1
        last_ttl: int | None = None
        while time.monotonic() < deadline:
            holder = self.client.get(key)
            if holder is None or _text(holder) == self.instance:
                return
            ttl = int(self.client.pttl(key))
            if ttl < 0:
                return
            if last_ttl is not None and ttl > last_ttl + poll_s * 1000 / 2:
                raise NodeIdClash(self._clash_message())
            last_ttl = ttl
            time.sleep(poll_s)
        raise NodeIdClash(self._clash_message())

    def _clash_message(self) -> str:
        info = self.nodes().get(self.node_id)
        where = f" at {info.url}" if info else ""
        return (
            f"cluster.node_id {self.node_id!r} is already used by a live node{where}; give each node its own "
            "node_id (it defaults to the host name)"
        )

    def beat(self, info: NodeInfo) -> bool:
        """Renew the heartbeat with fresh info; False if another instance took the id (a clash)."""
        info.ts = time.time()
        reply = self._beat(
            keys=[node_key(self.node_id), NODES],
            args=[self.instance, round(self.lease_s * 1000), self.node_id, info.to_json(), CHANGES],
        )
        return bool(reply)

    def leave(self) -> None:
        """Drop the heartbeat at once (a clean stop), telling the other nodes."""
        self._leave(keys=[node_key(self.node_id)], args=[self.instance, CHANGES, self.node_id])

    def nodes(self) -> dict[str, NodeInfo]:
        """Every node known (alive or dead a while), by id; dead ones long gone are forgotten."""
        raw = self.client.hgetall(NODES)
        infos = {}
        for key, value in raw.items():
            info = NodeInfo.from_json(value)
            if info is not None:
                infos[_text(key)] = info
        if not infos:
            return {}
        ids = sorted(infos)
        alive = self.client.mget([node_key(n) for n in ids])
        now = time.time()
        stale = []
        for node_id, beat in zip(ids, alive, strict=True):
            infos[node_id].alive = beat is not None
            if beat is None and now - infos[node_id].ts > _FORGET_DEAD_AFTER_S:
                stale.append(node_id)
        if stale:
            self.client.hdel(NODES, *stale)
            for node_id in stale:
                del infos[node_id]
        return infos


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
