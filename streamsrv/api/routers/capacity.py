"""Capacity: the headroom left per resource, how many more cameras like one fit, and admission control.

The measured costs come from the server (``ServerApi.capacity_usage``) and, for previews, from the preview hub; the
arithmetic is ``streamsrv.runtime.capacity``. ``admission`` is what the camera routes call before a change: a camera
the headroom cannot carry is refused with 409 and a body naming the resource and by how much.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request, status
from fastapi.responses import JSONResponse

from streamsrv.api.deps import Authenticated, ServerDep
from streamsrv.api.schemas import Message
from streamsrv.config.models import CameraConfig
from streamsrv.runtime.capacity import (
    CapacityRefused,
    CapacityReport,
    Shortfall,
    Usage,
    admission_shortfall,
    capacity_report,
)
from streamsrv.runtime.protocol import ServerApi
from streamsrv.runtime.registry import Admit

router = APIRouter(tags=["capacity"], dependencies=[Authenticated])
REFUSED: dict[int | str, dict[str, Any]] = {
    409: {"model": Shortfall, "description": "The measured headroom cannot carry it (?force=true overrides)."}
}
Force = Annotated[
    bool, Query(description="Apply the change even if the measured headroom cannot carry it (no 409 for capacity).")
]


def measured_usage(request: Request, server: ServerApi) -> Usage:
    """The server's measurements with each watched camera's preview drawing and encoding added."""
    usage = server.capacity_usage()
    hub = getattr(request.app.state, "preview", None)
    preview = hub.stats().cameras if hub is not None else {}
    for cam in usage.cameras:
        if cam.camera_id in preview:
            cam.preview_cores = preview[cam.camera_id].encode_cores
    return usage


def admission(request: Request, server: ServerApi, force: bool) -> Admit | None:
    """The check a camera change must pass (None with ``force``): raises CapacityRefused.

    None in cluster mode too: this node's headroom says nothing of the node the camera will run on; the cluster
    places cameras within each node's ``cluster.capacity`` and lists those without room as unassigned.
    """
    if force or server.cfg.cluster is not None:
        return None

    def admit(cam: CameraConfig, old: CameraConfig | None) -> None:
        short = admission_shortfall(server.cfg.capacity, measured_usage(request, server), cam, old)
        if short is not None:
            raise CapacityRefused(short)

    return admit


async def refused(request: Request, exc: Exception) -> JSONResponse:
    """The app's handler of CapacityRefused: 409 with the message as ``detail`` (like every other error) and the
    shortfall's numbers beside it."""
    assert isinstance(exc, CapacityRefused)
    body = {"detail": exc.shortfall.message, **exc.shortfall.model_dump(exclude={"message"})}
    return JSONResponse(body, status_code=status.HTTP_409_CONFLICT)


@router.get(
    "/api/capacity",
    summary="Headroom per resource, and how many more cameras like each one fit",
    responses={404: {"model": Message, "description": "?like= names no running camera."}},
)
def get_capacity(
    request: Request,
    server: ServerDep,
    like: Annotated[
        str | None, Query(max_length=64, description="A running camera: how many more like it fit, and what binds.")
    ] = None,
) -> CapacityReport:
    try:
        return capacity_report(server.cfg.capacity, measured_usage(request, server), like)
    except KeyError:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"camera {like!r} is not running") from None
