"""Capacity series for ``/metrics`` (names and meanings: docs/metrics.md): each camera's configured and effective
detect fps and what it costs, each resource's budget, use and headroom, and the overload governor's steps.

Read from ``ServerApi.capacity_usage`` at scrape time, through the same arithmetic as ``GET /api/capacity``
(previews' share of the main process is not split out here: the resources count it either way).
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from streamsrv.runtime.capacity import resources
from streamsrv.runtime.protocol import ServerApi


class CapacityCollector(Collector):
    def __init__(self, server: ServerApi) -> None:
        self.server = server

    def collect(self) -> Iterator[Metric]:
        usage = self.server.capacity_usage()
        per_camera = {
            "detect_fps": GaugeMetricFamily("streamsrv_camera_detect_fps", "Configured detect_fps.", labels=["camera"]),
            "effective": GaugeMetricFamily(
                "streamsrv_camera_effective_detect_fps",
                "detect_fps the decoder paces to now: lower while the server degrades the camera under overload.",
                labels=["camera"],
            ),
            "degraded": GaugeMetricFamily(
                "streamsrv_camera_degraded", "1 while the camera's effective detect_fps is lowered.", labels=["camera"]
            ),
            "busy": GaugeMetricFamily(
                "streamsrv_camera_inference_busy_ratio",
                "Share of the inference loop's time the camera takes (its frames' batch share x processed fps).",
                labels=["camera"],
            ),
            "decoder": GaugeMetricFamily(
                "streamsrv_camera_decoder_cpu_cores", "CPU cores the camera's decoder process uses.", labels=["camera"]
            ),
        }
        for cam in usage.cameras:
            label = [cam.camera_id]
            per_camera["detect_fps"].add_metric(label, cam.detect_fps)
            per_camera["effective"].add_metric(label, cam.effective_detect_fps)
            per_camera["degraded"].add_metric(label, float(cam.effective_detect_fps < cam.detect_fps))
            per_camera["busy"].add_metric(label, cam.inference_busy)
            per_camera["decoder"].add_metric(label, cam.decoder_cores)
        yield from per_camera.values()
        families = {
            name: GaugeMetricFamily(f"streamsrv_capacity_{name}", doc, labels=["resource"])
            for name, doc in (
                ("budget", "What the capacity config allows of the resource (units: docs/capacity.md)."),
                ("used", "What streamsrv uses of the resource now."),
                ("headroom", "budget - used; negative when over budget."),
            )
        }
        for name, room in resources(self.server.cfg.capacity, usage).items():
            families["budget"].add_metric([name], room.budget)
            families["used"].add_metric([name], room.used)
            families["headroom"].add_metric([name], room.headroom)
        yield from families.values()
        state = usage.degrade
        yield GaugeMetricFamily(
            "streamsrv_capacity_overloaded",
            "1 while some camera's frame age p95 is over its max_frame_age_ms.",
            value=float(state.overloaded),
        )
        steps = CounterMetricFamily(
            "streamsrv_capacity_degrade_steps",
            "Steps of the overload governor; direction: down (lowered detect fps) or up (restored it).",
            labels=["direction"],
        )
        steps.add_metric(["down"], state.steps_down)
        steps.add_metric(["up"], state.steps_up)
        yield steps
