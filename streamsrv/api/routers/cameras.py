"""Cameras: the registry (list, add, change, remove) and per-camera statistics.

Changes apply to the running server at once (only the camera concerned restarts) and are saved to the config
file when ``server.persist`` is on; see ``streamsrv.runtime.registry``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import redis
from fastapi import APIRouter, Depends, HTTPException, Request, status
from pydantic import ValidationError

from streamsrv.api.deps import Authenticated, ServerDep
from streamsrv.api.routers.capacity import REFUSED, Force, admission
from streamsrv.api.schemas import CameraOut, CameraPatch, Message, request_error
from streamsrv.cluster.view import ClusterView, read_view
from streamsrv.config.models import CameraConfig
from streamsrv.errors import ConflictError, NotFoundError
from streamsrv.runtime.capacity import CapacityRefused, Shortfall
from streamsrv.runtime.protocol import ServerApi
from streamsrv.runtime.registry import CameraRegistry, PersistError, field_error
from streamsrv.runtime.stats import CameraStats
from streamsrv.types import CameraState

REDIS_ERRORS = (redis.RedisError, OSError)

router = APIRouter(prefix="/api/cameras", tags=["cameras"], dependencies=[Authenticated])


def get_registry(request: Request) -> CameraRegistry:
    registry: CameraRegistry = request.app.state.registry
    return registry


RegistryDep = Annotated[CameraRegistry, Depends(get_registry)]
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": Message, "description": "No such camera."}}
CHANGE_ERRORS: dict[int | str, dict[str, Any]] = {
    500: {"model": Message, "description": "Applied to the running server, but the config file could not be written."}
}


@contextmanager
def api_errors() -> Iterator[None]:
    """Domain errors as HTTP errors: 404 not found, 409 conflict, 422 naming the field, 500 not saved. A capacity
    refusal passes through to the app's handler, which answers 409 with its numbers."""
    try:
        yield
    except CapacityRefused:
        raise
    except NotFoundError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
    except ConflictError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
    except ValidationError as err:
        raise request_error(err, "body") from None
    except PersistError as exc:
        raise HTTPException(status.HTTP_500_INTERNAL_SERVER_ERROR, f"applied but not saved: {exc}") from None


def camera_out(cam: CameraConfig, stats: CameraStats | None) -> CameraOut:
    """The API's view of a camera; ``stats`` is None for a disabled camera (registered but not running)."""
    return CameraOut.of(cam, stats.state, stats.error) if stats else CameraOut.of(cam, "disabled", None)


def describe(request: Request, server: ServerApi, cams: list[CameraConfig]) -> list[CameraOut]:
    """Cameras as the API shows them; in cluster mode each with its node and the state its node reports."""
    running = {s.camera_id: s for s in server.all_camera_stats()}
    node = getattr(request.app.state, "cluster", None)
    if node is None:
        return [camera_out(cam, running.get(cam.id)) for cam in cams]
    try:
        view = read_view(node)
    except REDIS_ERRORS as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, f"cluster state unavailable: {exc}") from None
    return [cluster_camera_out(view, cam, running.get(cam.id)) for cam in cams]


def cluster_camera_out(view: ClusterView, cam: CameraConfig, local: CameraStats | None) -> CameraOut:
    owner = view.camera_node(cam.id)
    if not cam.enabled:
        return CameraOut.of(cam, "disabled", None)
    if owner is None:
        if cam.id in view.unassigned:
            return CameraOut.of(cam, "unassigned", view.unassigned[cam.id])
        return CameraOut.of(cam, CameraState.STARTING, None)
    if owner == view.me and local is not None:
        return CameraOut.of(cam, local.state, local.error, owner)
    info = view.nodes.get(owner)
    reported = info.states.get(cam.id) if info else None
    return CameraOut.of(cam, CameraState(reported) if reported else CameraState.STARTING, None, owner)


def running_stats(server: ServerApi, camera_id: str) -> CameraStats | None:
    try:
        return server.camera_stats(camera_id)
    except NotFoundError:
        return None


@router.get("", summary="All registered cameras")
def list_cameras(request: Request, registry: RegistryDep, server: ServerDep) -> list[CameraOut]:
    return describe(request, server, registry.cameras())


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    summary="Register and start a camera",
    responses={
        409: {"model": Shortfall, "description": "The id is taken, or the measured headroom cannot carry the camera."},
        **CHANGE_ERRORS,
    },
)
def add_camera(
    body: CameraConfig, request: Request, registry: RegistryDep, server: ServerDep, force: Force = False
) -> CameraOut:
    with api_errors():
        cam = registry.add(body, admission(request, server, force))
    return describe(request, server, [cam])[0]


@router.get("/{camera_id}", summary="One camera", responses=NOT_FOUND)
def get_camera(request: Request, camera_id: str, registry: RegistryDep, server: ServerDep) -> CameraOut:
    with api_errors():
        cam = registry.get(camera_id)
    return describe(request, server, [cam])[0]


@router.put(
    "/{camera_id}",
    summary="Replace a camera's config (restarts it only if its source settings change)",
    responses={**NOT_FOUND, **REFUSED, **CHANGE_ERRORS},
)
def replace_camera(
    camera_id: str, body: CameraConfig, request: Request, registry: RegistryDep, server: ServerDep, force: Force = False
) -> CameraOut:
    if body.id != camera_id:
        mismatch = field_error("id", "must match the camera id in the path (cameras cannot be renamed)", body.id)
        raise request_error(mismatch, "body")
    with api_errors():
        cam = registry.replace(body, admission(request, server, force))
    return describe(request, server, [cam])[0]


@router.patch(
    "/{camera_id}",
    summary="Change some of a camera's fields",
    responses={**NOT_FOUND, **REFUSED, **CHANGE_ERRORS},
)
def update_camera(
    camera_id: str, body: CameraPatch, request: Request, registry: RegistryDep, server: ServerDep, force: Force = False
) -> CameraOut:
    with api_errors():
        cam = registry.update(camera_id, body.model_dump(exclude_unset=True), admission(request, server, force))
    return describe(request, server, [cam])[0]


@router.delete(
    "/{camera_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Stop and remove a camera",
    responses={**NOT_FOUND, **CHANGE_ERRORS},
)
def remove_camera(camera_id: str, registry: RegistryDep) -> None:
    with api_errors():
        registry.remove(camera_id)


@router.get("/{camera_id}/stats", summary="A camera's health and throughput", responses=NOT_FOUND)
def camera_stats(camera_id: str, registry: RegistryDep, server: ServerDep) -> CameraStats:
    with api_errors():
        cam = registry.get(camera_id)
    stats = running_stats(server, camera_id)
    if stats is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"camera {cam.id!r} is disabled: it has no stats")
    with api_errors():
        return stats.model_copy(update={"relinks": server.latest(camera_id).output.relinks})
