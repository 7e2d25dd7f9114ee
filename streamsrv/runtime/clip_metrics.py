"""Prometheus metrics of event clips, read from the server's ``ClipBook`` at scrape time."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from streamsrv.events.clips import OUTCOMES, ClipBook


class ClipCollector(Collector):
    """``streamsrv_clips_total{outcome}``, and the clip files kept (count and bytes)."""

    def __init__(self, book: ClipBook) -> None:
        self.book = book

    def collect(self) -> Iterator[Metric]:
        total = CounterMetricFamily(
            "streamsrv_clips",
            "Event clips by outcome: ready (written), skipped (disk full, unwritable directory, larger than "
            "record.max_bytes), failed (no video held, the decoder not running, a write error), expired (deleted "
            "by retention).",
            labels=["outcome"],
        )
        counts = dict(self.book.outcomes)
        for outcome in OUTCOMES:
            total.add_metric([outcome], counts.get(outcome, 0))
        yield total
        yield GaugeMetricFamily("streamsrv_clip_files", "Event clip files kept.", value=self.book.file_count)
        yield GaugeMetricFamily("streamsrv_clip_bytes", "Bytes of the event clips kept.", value=self.book.total_bytes)
