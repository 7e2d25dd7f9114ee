"""``GET /api/cluster``: the nodes, who runs which camera under which fencing token, and what runs nowhere."""

from __future__ import annotations

from typing import Any

import redis
from fastapi import APIRouter, HTTPException, Request, status

from streamsrv.api.deps import Authenticated
from streamsrv.api.schemas import Message
from streamsrv.cluster.view import read_view

router = APIRouter(prefix="/api/cluster", tags=["cluster"], dependencies=[Authenticated])


@router.get(
    "",
    summary="Cluster nodes, camera owners and unassigned cameras (any node answers for all)",
    responses={
        404: {"model": Message, "description": "Not in cluster mode."},
        503: {"model": Message, "description": "Redis unreachable."},
    },
)
def cluster(request: Request) -> dict[str, Any]:
    node = getattr(request.app.state, "cluster", None)
    if node is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "not in cluster mode: the config has no cluster section")
    try:
        return read_view(node).to_api()
    except (redis.RedisError, OSError) as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, f"cluster state unavailable: {exc}") from None
