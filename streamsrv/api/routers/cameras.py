"""Cameras: list and per-camera statistics."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, status

from streamsrv.api.deps import Authenticated, ServerDep
from streamsrv.errors import NotFoundError
from streamsrv.runtime.stats import CameraStats

router = APIRouter(prefix="/api/cameras", tags=["cameras"], dependencies=[Authenticated])


@router.get("/{camera_id}/stats", response_model=CameraStats, summary="A camera's health and throughput")
def camera_stats(camera_id: str, server: ServerDep) -> CameraStats:
    try:
        return server.supervisor.camera_stats(camera_id)
    except NotFoundError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
