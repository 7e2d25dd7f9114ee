"""The webhook outbox: events waiting for delivery, kept where a restart does not lose them.

``Outbox`` is what a webhook's deliverer needs; ``SpoolOutbox`` keeps it in a local append-only file and
``RedisOutbox`` (``redis_outbox``) in a Redis Stream with a consumer group. Each entry carries the exact body
that is POSTed, so a redelivery after a restart sends the same bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Protocol


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """One event waiting for delivery (or dead, with the error it died of)."""

    key: str
    camera_id: str
    event_id: str
    body: bytes
    error: str | None = None

    def dead(self, error: str) -> OutboxEntry:
        return replace(self, error=error)


class Outbox(Protocol):
    """Durable storage of one webhook's entries; thread-safe; every method returns once the change is stored."""

    def load(self) -> tuple[list[OutboxEntry], list[OutboxEntry]]:
        """The pending entries, oldest first, and the dead ones, as stored."""
        ...

    def add(self, camera_id: str, event_id: str, body: bytes) -> OutboxEntry:
        """Store a new pending entry after all others."""
        ...

    def delivered(self, entry: OutboxEntry) -> None:
        """Forget a pending entry: the receiver has it."""
        ...

    def bury(self, entry: OutboxEntry, error: str) -> OutboxEntry:
        """Move a pending entry to the dead letters."""
        ...

    def redrive(self, entry: OutboxEntry) -> OutboxEntry:
        """Move a dead entry back to the end of the pending ones (a new key); returns the new entry."""
        ...

    def close(self) -> None: ...
