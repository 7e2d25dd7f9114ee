"""Live preview: MJPEG, WebRTC signalling, snapshot.jpg, the browser's ICE settings, and the web page at ``/``.

The preview hub and the WebRTC peers live as long as the app (this router's lifespan): WebRTC connections are
closed before the stream server stops.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request, Response, status
from fastapi.responses import FileResponse, StreamingResponse
from pydantic import BaseModel, Field
from starlette.background import BackgroundTask

from streamsrv.api.deps import Authenticated, ShutdownDep
from streamsrv.config.models import AppConfig
from streamsrv.errors import NotFoundError
from streamsrv.preview.hub import Layer, PreviewHub, PreviewStats
from streamsrv.preview.mjpeg import MEDIA_TYPE, mjpeg_stream
from streamsrv.preview.webrtc import BadOffer, PeerLimitReached, WebRtcPeers
from streamsrv.runtime.caches import Caches, CacheSize

WEB_DIR = Path(__file__).resolve().parents[2] / "web"
_NO_STORE = {"Cache-Control": "no-store"}


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    cfg: AppConfig = app.state.config
    hub = PreviewHub(app.state.server, cfg.preview)
    peers = WebRtcPeers(hub, cfg.preview)
    app.state.preview, app.state.webrtc = hub, peers
    caches: Caches = app.state.caches
    forget_cache = caches.add(lambda: [preview_cache_size(hub.stats())])
    try:
        yield
    finally:
        forget_cache()
        await peers.close_all()
        await asyncio.to_thread(hub.close)


router = APIRouter(tags=["preview"], lifespan=lifespan)


def preview_cache_size(stats: PreviewStats) -> CacheSize:
    """The frames the preview holds: each watched camera's latest, and WebRTC viewers' queues (bounded per viewer)."""
    return CacheSize(cache="preview", items=stats.buffered_frames, bytes=stats.buffered_bytes)


def get_hub(request: Request) -> PreviewHub:
    hub: PreviewHub = request.app.state.preview
    return hub


def get_peers(request: Request) -> WebRtcPeers:
    peers: WebRtcPeers = request.app.state.webrtc
    return peers


def get_layers(
    layers: Annotated[
        list[Layer],
        Query(description="Optional layers to draw, repeatable: motion (the regions the motion gate found moving)."),
    ] = [],  # noqa: B006 - FastAPI copies query defaults
) -> frozenset[Layer]:
    return frozenset(layers)


HubDep = Annotated[PreviewHub, Depends(get_hub)]
LayersDep = Annotated[frozenset[Layer], Depends(get_layers)]
PeersDep = Annotated[WebRtcPeers, Depends(get_peers)]
_CAMERA_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "No camera with this id."}}


class WebRtcOffer(BaseModel):
    """The browser's ``RTCSessionDescription`` (``pc.localDescription`` after ``setLocalDescription``)."""

    type: Literal["offer"] = Field(description="Always 'offer'.")
    sdp: str = Field(min_length=1, max_length=100_000, description="The complete offer, ICE candidates included.")


class WebRtcAnswer(BaseModel):
    type: Literal["answer"] = "answer"
    sdp: str = Field(description="The answer with every server candidate (no trickle ICE).")
    session_id: str = Field(description="Names this viewer for DELETE .../webrtc/{session_id}.")


class IceServer(BaseModel):
    """An ``RTCIceServer`` for the browser's ``RTCPeerConnection``."""

    urls: list[str]
    username: str | None = None
    credential: str | None = None


class PreviewSettings(BaseModel):
    fps: float = Field(description="Preview frames per second at most.")
    ice_servers: list[IceServer] = Field(description="STUN/TURN servers the browser should use too.")


class PreviewStatus(PreviewStats):
    webrtc_peers: int = Field(description="Open WebRTC connections.")


def _not_found(exc: NotFoundError) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, str(exc))


@router.get("/", include_in_schema=False)
def index() -> FileResponse:
    return FileResponse(WEB_DIR / "index.html", headers=_NO_STORE)


@router.get(
    "/api/cameras/{camera_id}/mjpeg",
    dependencies=[Authenticated],
    response_class=StreamingResponse,
    summary="Live annotated video as MJPEG (multipart/x-mixed-replace)",
    responses={200: {"content": {"multipart/x-mixed-replace": {}}}, **_CAMERA_NOT_FOUND},
)
async def camera_mjpeg(camera_id: str, hub: HubDep, layers: LayersDep, shutdown: ShutdownDep) -> StreamingResponse:
    try:
        viewer = hub.watch(camera_id, "mjpeg", layers)
    except NotFoundError as exc:
        raise _not_found(exc) from None
    # Also closed after the response: a client gone before the stream starts cancels it before its generator
    # runs, and the generator's own ``finally`` with it.
    return StreamingResponse(
        mjpeg_stream(viewer, shutdown),
        media_type=MEDIA_TYPE,
        headers=_NO_STORE,
        background=BackgroundTask(viewer.close),
    )


@router.get(
    "/api/cameras/{camera_id}/snapshot.jpg",
    dependencies=[Authenticated],
    response_class=Response,
    summary="The latest annotated frame as a JPEG",
    responses={
        200: {"content": {"image/jpeg": {}}},
        **_CAMERA_NOT_FOUND,
        503: {"description": "The camera has no picture yet (starting, offline or disabled)."},
    },
)
async def camera_snapshot(camera_id: str, hub: HubDep, layers: LayersDep) -> Response:
    try:
        frame = await asyncio.to_thread(hub.snapshot, camera_id, layers)
    except NotFoundError as exc:
        raise _not_found(exc) from None
    if frame is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, f"camera {camera_id!r} has no picture yet")
    jpeg = frame.jpeg() if frame.has_jpeg else await asyncio.to_thread(frame.jpeg)
    return Response(jpeg, media_type="image/jpeg", headers=_NO_STORE)


@router.post(
    "/api/cameras/{camera_id}/webrtc",
    dependencies=[Authenticated],
    summary="Start a WebRTC preview: post the browser's SDP offer, get the answer",
    responses={
        400: {"description": "The offer is not usable (field sdp)."},
        **_CAMERA_NOT_FOUND,
        503: {"description": "Too many WebRTC viewers (preview.max_webrtc_peers)."},
    },
)
async def camera_webrtc(camera_id: str, offer: WebRtcOffer, peers: PeersDep, layers: LayersDep) -> WebRtcAnswer:
    try:
        session_id, answer = await peers.answer(camera_id, offer.sdp, layers)
    except NotFoundError as exc:
        raise _not_found(exc) from None
    except BadOffer as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, f"sdp: {exc}") from None
    except PeerLimitReached as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc)) from None
    return WebRtcAnswer(sdp=answer.sdp, session_id=session_id)


@router.delete(
    "/api/cameras/{camera_id}/webrtc/{session_id}",
    dependencies=[Authenticated],
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Close a WebRTC preview",
    responses={404: {"description": "No such session for this camera (it may have closed already)."}},
)
async def close_webrtc(camera_id: str, session_id: str, peers: PeersDep) -> None:
    if peers.camera_of(session_id) != camera_id:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"session_id: no WebRTC session {session_id!r} on {camera_id!r}")
    await peers.close(session_id)


@router.get(
    "/api/preview/settings",
    dependencies=[Authenticated],
    summary="What the browser needs for the preview (ICE servers, TURN credentials included)",
)
def preview_settings(request: Request) -> PreviewSettings:
    cfg: AppConfig = request.app.state.config
    p = cfg.preview
    return PreviewSettings(
        fps=p.fps,
        ice_servers=[
            IceServer(
                urls=s.urls, username=s.username, credential=s.credential.get_secret_value() if s.credential else None
            )
            for s in p.ice_servers
        ],
    )


@router.get("/api/preview/stats", dependencies=[Authenticated], summary="Preview feeds, viewers and WebRTC peers")
def preview_stats(hub: HubDep, peers: PeersDep) -> PreviewStatus:
    return PreviewStatus(**hub.stats().model_dump(), webrtc_peers=len(peers))
