"""Prometheus series of the outputs (docs/metrics.md), read from their status at scrape time."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from streamsrv.outputs.manager import OutputManager


class OutputsCollector(Collector):
    """``streamsrv_output_*`` for every configured output, labelled by its name (never its URL)."""

    def __init__(self, manager: OutputManager) -> None:
        self.manager = manager

    def collect(self) -> Iterator[Metric]:
        labels = ["output", "kind"]
        delivered = CounterMetricFamily(
            "streamsrv_output_delivered", "Events (MQTT: messages) the receiver acknowledged.", labels=labels
        )
        failed = CounterMetricFamily(
            "streamsrv_output_failed", "Failed delivery attempts (retries count).", labels=labels
        )
        dropped = CounterMetricFamily(
            "streamsrv_output_dropped",
            "MQTT messages lost to the queue bound while the broker was away.",
            labels=labels,
        )
        pending = GaugeMetricFamily("streamsrv_output_pending", "Events waiting for delivery.", labels=labels)
        dead = GaugeMetricFamily("streamsrv_output_dead", "Events given up on (webhook dead letters).", labels=labels)
        connected = GaugeMetricFamily(
            "streamsrv_output_connected", "1 while connected to the MQTT broker.", labels=labels
        )
        for s in self.manager.status():
            key = [s.name, s.kind]
            delivered.add_metric(key, s.delivered)
            failed.add_metric(key, s.failed)
            dropped.add_metric(key, s.dropped)
            pending.add_metric(key, s.pending)
            dead.add_metric(key, s.dead)
            if s.connected is not None:
                connected.add_metric(key, 1.0 if s.connected else 0.0)
        yield from (delivered, failed, dropped, pending, dead, connected)
