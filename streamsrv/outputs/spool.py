"""``SpoolOutbox``: a webhook outbox in one local append-only file, for servers without Redis.

Each change is one JSON line (``add``, ``done``, ``dead``), appended and fsync'd before the call returns, so
what was stored survives a crash or power cut (``done`` lines excepted: losing one only repeats a delivery).
Loading replays the lines; a torn last line (a crash mid-write) is dropped. Once most lines describe finished
entries the file is rewritten with only the live ones (to a temporary file, fsync'd, renamed over the old one), so
it does not grow without bound.

Example:
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "hook.jsonl"
    >>> box = SpoolOutbox(path)
    >>> entry = box.add("door", "e1", b'{"id": "e1"}')
    >>> box.close(); [e.event_id for e in SpoolOutbox(path).load()[0]]
    ['e1']
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path
from typing import IO, Any

from streamsrv.outputs.outbox import OutboxEntry

log = logging.getLogger(__name__)

COMPACT_MIN_LINES = 1000


class SpoolOutbox:
    """The ``Outbox`` of one webhook in ``path`` (its directory is created); one server per file."""

    def __init__(self, path: Path, compact_min_lines: int = COMPACT_MIN_LINES) -> None:
        self.path = path
        self._compact_min_lines = compact_min_lines
        self._lock = threading.Lock()
        self._pending: dict[str, OutboxEntry] = {}  # insertion order is delivery order
        self._dead: dict[str, OutboxEntry] = {}
        self._next_key = 1
        self._lines = 0
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            self._replay()
        self._file: IO[str] = open(path, "a", encoding="utf-8")  # noqa: SIM115 - held until close()

    def load(self) -> tuple[list[OutboxEntry], list[OutboxEntry]]:
        with self._lock:
            return list(self._pending.values()), list(self._dead.values())

    def add(self, camera_id: str, event_id: str, body: bytes) -> OutboxEntry:
        with self._lock:
            entry = OutboxEntry(str(self._next_key), camera_id, event_id, body)
            self._next_key += 1
            self._append({"op": "add", "key": entry.key, "camera": camera_id, "event": event_id, "body": body.decode()})
            self._pending[entry.key] = entry
            return entry

    def delivered(self, entry: OutboxEntry) -> None:
        with self._lock:
            # Not fsync'd: losing this line to a power cut only sends the event again (receivers drop repeats by
            # id), and it halves the fsyncs per event.
            self._append({"op": "done", "key": entry.key}, sync=False)
            self._pending.pop(entry.key, None)
            self._maybe_compact()

    def bury(self, entry: OutboxEntry, error: str) -> OutboxEntry:
        with self._lock:
            self._append({"op": "dead", "key": entry.key, "error": error})
            dead = entry.dead(error)
            self._pending.pop(entry.key, None)
            self._dead[entry.key] = dead
            return dead

    def redrive(self, entry: OutboxEntry) -> OutboxEntry:
        new = self.add(entry.camera_id, entry.event_id, entry.body)
        with self._lock:
            self._append({"op": "done", "key": entry.key})
            self._dead.pop(entry.key, None)
            return new

    def close(self) -> None:
        with self._lock:
            self._file.close()

    def _append(self, record: dict[str, Any], sync: bool = True) -> None:
        self._file.write(json.dumps(record, separators=(",", ":")) + "\n")
        self._file.flush()
        if sync:
            os.fsync(self._file.fileno())
        self._lines += 1

    def _replay(self) -> None:
        data = self.path.read_bytes()
        complete = data.rfind(b"\n") + 1
        if complete < len(data):
            # A crash in the middle of an append: drop the torn line, or the next append would be glued to it.
            log.warning("outbox %s: dropping a torn last line", self.path)
            os.truncate(self.path, complete)
        for n, line in enumerate(data[:complete].decode("utf-8", errors="replace").splitlines(), 1):
            try:
                self._apply(json.loads(line))
            except (ValueError, KeyError, TypeError):
                log.warning("outbox %s: skipping unreadable line %d", self.path, n)
                continue
            self._lines += 1

    def _apply(self, record: dict[str, Any]) -> None:
        key = str(record["key"])
        if record["op"] == "add":
            entry = OutboxEntry(key, record["camera"], record["event"], record["body"].encode())
            self._pending[key] = entry
            self._next_key = max(self._next_key, int(key) + 1)
        elif record["op"] == "done":
            self._pending.pop(key, None)
            self._dead.pop(key, None)
        elif record["op"] == "dead" and key in self._pending:
            self._dead[key] = self._pending.pop(key).dead(record["error"])

    def _maybe_compact(self) -> None:
        live = len(self._pending) + len(self._dead)
        if self._lines < self._compact_min_lines or self._lines < 2 * live:
            return
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            for entry in [*self._pending.values(), *self._dead.values()]:
                add = {"op": "add", "key": entry.key, "camera": entry.camera_id, "event": entry.event_id}
                f.write(json.dumps({**add, "body": entry.body.decode()}, separators=(",", ":")) + "\n")
            # Dead entries come after every add so that replaying keeps pending ones in their order.
            for entry in self._dead.values():
                f.write(json.dumps({"op": "dead", "key": entry.key, "error": entry.error}) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        self._file.close()
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - held until close()
        self._lines = live + len(self._dead)
