"""Cluster mode: several ``streamsrv serve`` nodes share the cameras through Redis (see docs/cluster.md).

Without a ``cluster:`` section nothing changes: one server, the in-process bus, no Redis needed.

Example:
    >>> cfg = ClusterConfig.model_validate({"redis_url": "redis://redis:6379/0", "node_id": "gpu-0"})
    >>> cfg.lease_s, cfg.capacity
    (10.0, None)
"""

from __future__ import annotations

import socket
from typing import Any

from pydantic import Field, field_validator, model_validator

from streamsrv.config.base import StrictModel

NODE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"  # the camera id pattern: it appears in keys and URLs


def default_node_id() -> str:
    """The host name, cut to what a node id may hold (pods and containers name their host uniquely).

    >>> import re; bool(re.fullmatch(NODE_ID_PATTERN, default_node_id()))
    True
    """
    name = "".join(ch if ch.isalnum() or ch in "_.-" else "-" for ch in socket.gethostname()).lstrip("_.-")
    return (name or "node")[:64]


class ClusterConfig(StrictModel):
    """This node's place in a cluster of nodes sharing one Redis."""

    redis_url: str = Field(
        min_length=1,
        description="redis://[:password@]host:port/db holding the camera registry, node membership, camera leases "
        "and the events (events.redis_url defaults to it); use ${ENV_VAR} for secrets.",
    )
    node_id: str = Field(
        default_factory=default_node_id,
        pattern=NODE_ID_PATTERN,
        description="This node's unique name (defaults to the host name); a second live node with the same id "
        "refuses to start.",
    )
    advertise_url: str | None = Field(
        None,
        description="How other nodes and browsers reach this node's API, e.g. http://10.0.0.7:8080; default "
        "http://<server.host>:<server.port> (the host name when server.host is 0.0.0.0 or ::).",
    )
    lease_s: float = Field(
        10.0,
        ge=1,
        le=300,
        description="Camera lease and node heartbeat time to live: a dead node's cameras move after at most this.",
    )
    capacity: int | None = Field(
        None, ge=0, le=100_000, description="Most cameras this node runs; unlimited when unset."
    )

    @field_validator("advertise_url")
    @classmethod
    def _check_url(cls, url: str | None) -> str | None:
        if url is not None and not url.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return None if url is None else url.rstrip("/")

    @model_validator(mode="before")
    @classmethod
    def _name_missing_url(cls, data: Any) -> Any:
        # pydantic's "Field required" says where but not what to do; the field must be named in full.
        if isinstance(data, dict) and not data.get("redis_url"):
            raise ValueError("cluster.redis_url is required in cluster mode: the Redis all nodes share")
        return data


def advertise_url(cfg: ClusterConfig, host: str, port: int) -> str:
    """The URL other nodes reach this one at: ``advertise_url``, else derived from the bind address.

    >>> advertise_url(ClusterConfig(redis_url="redis://r"), "127.0.0.1", 8081)
    'http://127.0.0.1:8081'
    """
    if cfg.advertise_url:
        return cfg.advertise_url
    if host in ("0.0.0.0", "::", ""):
        host = socket.gethostname()
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"
