"""Which node runs which camera: weighted rendezvous hashing over the live nodes, bounded by their capacity.

A pure function of the camera ids and the live nodes, so every node computes the same answer from the same view.
Each camera ranks the nodes by ``-weight / ln(h)`` (``h`` a hash of camera and node in (0, 1)) and goes to the
best one with room. A node joining takes only the cameras that now rank it first (about 1/N of them); a node
leaving gives up only its own. Cameras are placed in id order, so with capacities the answer is still
deterministic.

Example:
    >>> a = assign(["a", "b", "c"], {"n1": None, "n2": 1})
    >>> sorted(a.owners.values()).count("n2") <= 1, a.unassigned
    (True, {})
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Assignment:
    """``owners``: camera -> node; ``unassigned``: camera -> why no node takes it."""

    owners: dict[str, str] = field(default_factory=dict)
    unassigned: dict[str, str] = field(default_factory=dict)

    def cameras_of(self, node_id: str) -> list[str]:
        return sorted(c for c, n in self.owners.items() if n == node_id)


def score(camera_id: str, node_id: str, weight: float = 1.0) -> float:
    """The camera's preference for the node: higher wins (weighted rendezvous hashing)."""
    digest = hashlib.blake2b(f"{camera_id}\0{node_id}".encode(), digest_size=8).digest()
    unit = (int.from_bytes(digest, "big") + 0.5) / 2**64  # in (0, 1), never 0 or 1
    return -weight / math.log(unit)


def weights(capacities: Mapping[str, int | None]) -> dict[str, float]:
    """A node's weight is its capacity; a node without one weighs the mean of the capacities given (1 if none).

    >>> weights({"a": 4, "b": None, "c": 8})
    {'a': 4.0, 'b': 6.0, 'c': 8.0}
    """
    given = [c for c in capacities.values() if c]
    default = sum(given) / len(given) if given else 1.0
    return {n: float(c) if c else default for n, c in capacities.items()}


def assign(camera_ids: Iterable[str], capacities: Mapping[str, int | None]) -> Assignment:
    """Place each camera on the live node (``capacities``: node id -> max cameras or None) that ranks best with room."""
    w = weights(capacities)
    room: dict[str, float] = {n: math.inf if c is None else c for n, c in capacities.items()}
    out = Assignment()
    for camera_id in sorted(set(camera_ids)):
        ranked = sorted(w, key=lambda n: (score(camera_id, n, w[n]) if w[n] > 0 else -1.0, n), reverse=True)
        node = next((n for n in ranked if room[n] >= 1), None)
        if node is not None:
            out.owners[camera_id] = node
            room[node] -= 1
        elif not capacities:
            out.unassigned[camera_id] = "no live node"
        else:
            total = sum(c or 0 for c in capacities.values())
            out.unassigned[camera_id] = (
                f"no room: all {len(capacities)} live node(s) are at capacity ({total} camera(s) in all)"
            )
    return out
