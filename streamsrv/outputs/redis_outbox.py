"""``RedisOutbox``: a webhook outbox in a Redis Stream read through a consumer group.

New entries are ``XADD``ed to ``<prefix>:<name>``; the deliverer reads them through the group ``deliver``, so
an entry read but not yet acknowledged stays in the group's pending list across restarts. Delivery ends with
``XACK`` and ``XDEL``; a dead entry moves to the stream ``<prefix>:<name>:dead``. Redis must keep its data
(appendonly or snapshots) for the outbox to survive a Redis restart too.

Example:
    >>> box = RedisOutbox("redis://127.0.0.1:6379/0", "webhook-0")  # doctest: +SKIP
"""

from __future__ import annotations

import threading
from typing import Any

import redis

from streamsrv.outputs.outbox import OutboxEntry

GROUP = "deliver"
CONSUMER = "streamsrv"
READ_BATCH = 1000


class RedisOutbox:
    """The ``Outbox`` of webhook ``name`` in Redis at ``url``; raises redis errors when Redis is unreachable."""

    def __init__(self, url: str, name: str, prefix: str = "streamsrv:outbox", timeout_s: float = 5.0) -> None:
        self.stream = f"{prefix}:{name}"
        self.dead_stream = f"{self.stream}:dead"
        self._redis = redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
        self._lock = threading.Lock()

    def load(self) -> tuple[list[OutboxEntry], list[OutboxEntry]]:
        with self._lock:
            try:
                self._redis.xgroup_create(self.stream, GROUP, id="0", mkstream=True)
            except redis.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
            # First what an earlier run read and never acknowledged, then everything it never read.
            pending = self._read("0") + self._read(">")
            buried: Any = self._redis.xrange(self.dead_stream)
            dead = [self._entry(key, fields) for key, fields in buried]
            return pending, dead

    def add(self, camera_id: str, event_id: str, body: bytes) -> OutboxEntry:
        with self._lock:
            key = self._redis.xadd(self.stream, {"camera": camera_id, "event": event_id, "body": body})
            return OutboxEntry(_text(key), camera_id, event_id, body)

    def delivered(self, entry: OutboxEntry) -> None:
        with self._lock:
            pipe = self._redis.pipeline()
            pipe.xack(self.stream, GROUP, entry.key)
            pipe.xdel(self.stream, entry.key)
            pipe.execute()

    def bury(self, entry: OutboxEntry, error: str) -> OutboxEntry:
        with self._lock:
            pipe = self._redis.pipeline()  # MULTI/EXEC: the entry is in exactly one of the two streams
            fields = {"camera": entry.camera_id, "event": entry.event_id, "body": entry.body, "error": error}
            pipe.xadd(self.dead_stream, fields)  # type: ignore[arg-type]
            pipe.xack(self.stream, GROUP, entry.key)
            pipe.xdel(self.stream, entry.key)
            key = pipe.execute()[0]
            return OutboxEntry(_text(key), entry.camera_id, entry.event_id, entry.body, error)

    def redrive(self, entry: OutboxEntry) -> OutboxEntry:
        with self._lock:
            pipe = self._redis.pipeline()
            pipe.xadd(self.stream, {"camera": entry.camera_id, "event": entry.event_id, "body": entry.body})
            pipe.xdel(self.dead_stream, entry.key)
            key = pipe.execute()[0]
            return OutboxEntry(_text(key), entry.camera_id, entry.event_id, entry.body)

    def close(self) -> None:
        self._redis.close()

    def _read(self, start: str) -> list[OutboxEntry]:
        entries: list[OutboxEntry] = []
        after = start
        while True:
            got: Any = self._redis.xreadgroup(GROUP, CONSUMER, {self.stream: after}, count=READ_BATCH)
            batch = got[0][1] if got else []
            entries += [self._entry(key, fields) for key, fields in batch if fields]
            if len(batch) < READ_BATCH:
                return entries
            if start != ">":
                after = _text(batch[-1][0])

    @staticmethod
    def _entry(key: Any, fields: dict[bytes, bytes]) -> OutboxEntry:
        error = fields.get(b"error")
        return OutboxEntry(
            _text(key),
            fields[b"camera"].decode(),
            fields[b"event"].decode(),
            fields[b"body"],
            error.decode() if error is not None else None,
        )


def _text(key: Any) -> str:
    return key.decode() if isinstance(key, bytes) else str(key)
