"""Where the cluster's state lives in Redis: one prefix, one function per key.

Example:
    >>> lease_key("door"), node_key("gpu-0")
    ('streamsrv:cluster:lease:door', 'streamsrv:cluster:node:gpu-0')
"""

from __future__ import annotations

PREFIX = "streamsrv:cluster"
CAMERAS = f"{PREFIX}:cameras"  # hash: camera id -> CameraConfig JSON (rules inline)
SEEDED = f"{PREFIX}:seeded"  # set once the registry was seeded; its absence means Redis lost the registry
NODES = f"{PREFIX}:nodes"  # hash: node id -> node info JSON (kept a while after the node died, for last_seen_s)
CHANGES = f"{PREFIX}:changes"  # pub/sub channel: the registry or membership changed; reconcile now


def node_key(node_id: str) -> str:
    """The node's heartbeat: its instance id, with a time to live of ``lease_s``; gone means dead."""
    return f"{PREFIX}:node:{node_id}"


def lease_key(camera_id: str) -> str:
    """The camera's lease: ``<token>:<node id>:<since ms>``, with a time to live of ``lease_s``."""
    return f"{PREFIX}:lease:{camera_id}"


def token_key(camera_id: str) -> str:
    """The camera's last fencing token (INCR; it only grows)."""
    return f"{PREFIX}:token:{camera_id}"


def seq_key(camera_id: str) -> str:
    """The camera's last event sequence number in the stream, across owners (see docs/events.md)."""
    return f"{PREFIX}:seq:{camera_id}"
