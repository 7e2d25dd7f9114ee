"""The cluster as the API shows it: nodes, who runs which camera, and what runs nowhere and why.

Read fresh from Redis on each call (a handful of commands), so any node answers with the same truth.

Example:
    >>> view = read_view(node); view.to_api()["unassigned"]  # doctest: +SKIP
    {'cam7': 'no room: all 3 live node(s) are at capacity (6 camera(s) in all)'}
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from streamsrv.cluster.assignment import assign
from streamsrv.cluster.leases import LeaseValue
from streamsrv.cluster.membership import NodeInfo
from streamsrv.config.models import CameraConfig

if TYPE_CHECKING:
    from streamsrv.cluster.node import ClusterNode

DISABLED = "disabled"


@dataclass(frozen=True, slots=True)
class ClusterView:
    """One consistent read of the registry, the nodes and the leases."""

    me: str
    cameras: dict[str, CameraConfig]
    nodes: dict[str, NodeInfo]
    holders: dict[str, LeaseValue | None]
    unassigned: dict[str, str]
    at: float

    def owner(self, camera_id: str) -> NodeInfo | None:
        """The node holding the camera's lease (it may have just died: see ``alive``), None when nobody does."""
        holder = self.holders.get(camera_id)
        if holder is None:
            return None
        return self.nodes.get(holder.node) or NodeInfo(holder.node, "")

    def camera_node(self, camera_id: str) -> str | None:
        holder = self.holders.get(camera_id)
        return holder.node if holder else None

    def why_not_running(self, camera_id: str) -> str:
        """For a camera nobody runs: the reason (disabled, no room), or that it is between owners."""
        return self.unassigned.get(camera_id, "being started by its new owner (no node holds its lease yet)")

    def to_api(self) -> dict[str, Any]:
        """The ``GET /api/cluster`` body (docs/cluster.md)."""
        runs: dict[str, list[str]] = {}
        for camera_id, holder in self.holders.items():
            if holder is not None:
                runs.setdefault(holder.node, []).append(camera_id)
        nodes = [
            {
                "id": info.id,
                "url": info.url,
                "alive": info.alive,
                "last_seen_s": round(max(0.0, self.at - info.ts), 3),
                "cameras": sorted(runs.get(node_id, [])),
                "capacity": info.capacity,
                "processed_fps": info.processed_fps,
                "inference_busy": info.inference_busy,
            }
            for node_id, info in sorted(self.nodes.items())
        ]
        cameras = {
            camera_id: {"node": h.node, "fencing_token": h.token, "since": h.since}
            for camera_id, h in sorted(self.holders.items())
            if h is not None
        }
        return {"nodes": nodes, "cameras": cameras, "unassigned": dict(sorted(self.unassigned.items()))}


def read_view(node: ClusterNode) -> ClusterView:
    """Read the cluster now; raises redis errors when Redis is unreachable."""
    cameras = node.store.load()
    nodes = node.membership.nodes()
    holders = node.leases.holders(list(cameras))
    live = {n: i.capacity for n, i in nodes.items() if i.alive}
    enabled = [c for c, cam in cameras.items() if cam.enabled]
    unassigned = {c: DISABLED for c, cam in cameras.items() if not cam.enabled}
    for camera_id, why in assign(enabled, live).unassigned.items():
        if holders.get(camera_id) is None:
            unassigned[camera_id] = why
    return ClusterView(node.node_id, cameras, nodes, holders, unassigned, time.time())
