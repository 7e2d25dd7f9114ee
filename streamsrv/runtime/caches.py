"""The bounded caches of a running server and how full each is, for ``GET /api/caches`` and ``/metrics``.

A server that runs for days may hold only what these bounds allow: a process whose memory keeps growing once
every cache here is full has a leak, not a cache filling up. Each part of the server that keeps caches registers a
reader of their sizes; readers run when asked (a scrape, a request), so keeping count costs nothing in between.

Example:
    >>> caches = Caches()
    >>> remove = caches.add(lambda: [CacheSize(cache="snapshots", items=3, bytes=120_000, max_items=1000)])
    >>> [(c.cache, c.items, c.bytes) for c in caches.sizes()]
    [('snapshots', 3, 120000)]
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from pydantic import BaseModel, Field

from streamsrv.config.models import EventsConfig
from streamsrv.events import EventBus, SnapshotStore


class CacheSize(BaseModel):
    """How full one bounded cache is now."""

    cache: str = Field(description="snapshots, events, job_results or preview.")
    items: int = Field(description="Entries held now.")
    bytes: int | None = Field(None, description="Their size in bytes; null where it is not measured.")
    max_items: int | None = Field(None, description="The bound on entries, if there is one.")
    max_bytes: int | None = Field(None, description="The bound on bytes, if there is one.")


CacheReader = Callable[[], list[CacheSize]]


class Caches:
    """Readers of a server's caches, registered by their owners; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._readers: list[CacheReader] = []

    def add(self, reader: CacheReader) -> Callable[[], None]:
        """Register a reader; returns what removes it again (for a cache that goes before the server)."""
        with self._lock:
            self._readers.append(reader)

        def remove() -> None:
            with self._lock:
                if reader in self._readers:
                    self._readers.remove(reader)

        return remove

    def sizes(self) -> list[CacheSize]:
        with self._lock:
            readers = list(self._readers)
        return [size for read in readers for size in read()]


def event_cache_sizes(cfg: EventsConfig, snapshots: SnapshotStore, bus: EventBus) -> list[CacheSize]:
    """How full the event snapshots and the events held in memory are."""
    snaps, held = snapshots.stats(), bus.stats()
    return [
        CacheSize(
            cache="snapshots",
            items=snaps.count,
            bytes=snaps.bytes,
            max_items=cfg.snapshot_max_count,
            max_bytes=cfg.snapshot_max_bytes,
        ),
        CacheSize(cache="events", items=held.held, max_items=held.held_max),
    ]


class CacheCollector(Collector):
    """``streamsrv_cache_items`` and ``streamsrv_cache_bytes`` (label ``cache``) and their bounds, at scrape time."""

    def __init__(self, caches: Caches) -> None:
        self.caches = caches

    def collect(self) -> Iterator[Metric]:
        families = {
            "items": GaugeMetricFamily("streamsrv_cache_items", "Entries a bounded cache holds now.", labels=["cache"]),
            "bytes": GaugeMetricFamily(
                "streamsrv_cache_bytes", "Bytes a bounded cache holds now (where measured).", labels=["cache"]
            ),
            "max_items": GaugeMetricFamily(
                "streamsrv_cache_max_items", "The bound on a cache's entries (where it has one).", labels=["cache"]
            ),
            "max_bytes": GaugeMetricFamily(
                "streamsrv_cache_max_bytes", "The bound on a cache's bytes (where it has one).", labels=["cache"]
            ),
        }
        for size in self.caches.sizes():
            for key, family in families.items():
                value = getattr(size, key)
                if value is not None:
                    family.add_metric([size.cache], float(value))
        yield from families.values()
