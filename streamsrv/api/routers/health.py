"""Liveness and readiness probes."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response, status
from pydantic import BaseModel

from streamsrv.api.deps import ServerDep

router = APIRouter(tags=["health"])


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    ready: bool
    model_loaded: bool
    backend: str
    device: str
    inference_alive: bool
    inference_restarts: int
    inference_error: str | None
    cameras: int
    cluster_error: str | None = None


@router.get("/healthz", response_model=Health, summary="The process is alive")
def healthz() -> Health:
    return Health(status="ok")


@router.get(
    "/readyz",
    response_model=Readiness,
    summary="Model loaded and cameras started (503 until then)",
    responses={503: {"model": Readiness}},
)
def readyz(request: Request, server: ServerDep, response: Response) -> Readiness:
    h = server.inference_health()
    node = request.app.state.cluster  # cluster mode: ready once joined (Redis reachable, node id not clashing)
    ready = server.ready and (node is None or node.ready)
    if not ready:
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    return Readiness(
        ready=ready,
        model_loaded=h.model_loaded,
        backend=h.backend,
        device=h.device,
        inference_alive=h.alive,
        inference_restarts=h.restarts,
        inference_error=h.error,
        cameras=len(server.running_camera_ids()),
        cluster_error=None if node is None else node.error,
    )
