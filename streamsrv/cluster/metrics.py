"""``streamsrv_cluster_*``: the cluster as this node sees it at scrape time (docs/metrics.md).

The per-node series come from one read of Redis, so every node's ``/metrics`` shows the whole cluster; a Grafana
panel should take them from one node, or ``max by (node_id)``. This node's own lease counters carry its id too. The
label is ``node_id``, not ``node``: Prometheus adds ``node`` to every series of a scrape target.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import redis
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from streamsrv.cluster.view import read_view

if TYPE_CHECKING:
    from streamsrv.cluster.node import ClusterNode


class ClusterCollector(Collector):
    def __init__(self, node: ClusterNode) -> None:
        self.node = node

    def collect(self) -> Iterator[Metric]:
        me = self.node.node_id
        joined = GaugeMetricFamily(
            "streamsrv_cluster_joined",
            "1 while this node is a member (Redis reachable, heartbeat renewed), else 0.",
            labels=["node_id"],
        )
        joined.add_metric([me], 1.0 if self.node.ready else 0.0)
        yield joined
        leases = CounterMetricFamily(
            "streamsrv_cluster_leases",
            "Camera leases this node acquired, lost (taken or run out: the camera stopped at once) and released "
            "(handed over or at shutdown).",
            labels=["node_id", "outcome"],
        )
        for outcome in ("acquired", "lost", "released"):
            leases.add_metric([me, outcome], self.node.counts[outcome])
        yield leases
        errors = CounterMetricFamily(
            "streamsrv_cluster_redis_errors",
            "Reconcile rounds of this node that failed because Redis was unreachable.",
            labels=["node_id"],
        )
        errors.add_metric([me], self.node.counts["redis_errors"])
        yield errors
        try:
            view = read_view(self.node)
        except (redis.RedisError, OSError):
            return
        up = GaugeMetricFamily("streamsrv_cluster_node_up", "1 for a live node, 0 for a dead one.", labels=["node_id"])
        cams = GaugeMetricFamily(
            "streamsrv_cluster_node_cameras", "Cameras whose lease the node holds.", labels=["node_id"]
        )
        capacity = GaugeMetricFamily(
            "streamsrv_cluster_node_capacity",
            "The node's capacity (nodes without one are left out).",
            labels=["node_id"],
        )
        fps = GaugeMetricFamily(
            "streamsrv_cluster_node_processed_fps", "Frames the node processes per second.", labels=["node_id"]
        )
        busy = GaugeMetricFamily(
            "streamsrv_cluster_node_inference_busy",
            "Share of time the node's model is busy (0..1).",
            labels=["node_id"],
        )
        held = view.to_api()
        for n in held["nodes"]:
            up.add_metric([n["id"]], 1.0 if n["alive"] else 0.0)
            cams.add_metric([n["id"]], len(n["cameras"]))
            if n["capacity"] is not None:
                capacity.add_metric([n["id"]], n["capacity"])
            fps.add_metric([n["id"]], n["processed_fps"])
            busy.add_metric([n["id"]], n["inference_busy"])
        yield from (up, cams, capacity, fps, busy)
        unassigned = GaugeMetricFamily(
            "streamsrv_cluster_camera_unassigned",
            "1 for each camera no node runs, with the reason (disabled, or no room).",
            labels=["camera", "reason"],
        )
        for camera_id, reason in held["unassigned"].items():
            unassigned.add_metric([camera_id, reason], 1.0)
        yield unassigned
        yield GaugeMetricFamily(
            "streamsrv_cluster_cameras", "Cameras in the cluster registry.", value=len(view.cameras)
        )
