"""Event clips: ``GET /api/events/{id}/clip.mp4``, the MP4 a camera with ``record.enabled`` cut around an event.

Served as a file with HTTP range requests (206 Partial Content), so browsers can seek in it.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, status
from fastapi.responses import FileResponse

from streamsrv.api.deps import Authenticated, ServerDep
from streamsrv.api.routers.events import EVENT_ID_PATTERN
from streamsrv.api.schemas import Message

router = APIRouter(prefix="/api/events", tags=["events"])


@router.get(
    "/{event_id}/clip.mp4",
    response_class=FileResponse,
    dependencies=[Authenticated],
    summary="The event's video clip (stream copy of the camera's own video); range requests work",
    responses={
        200: {"content": {"video/mp4": {"schema": {"type": "string", "format": "binary"}}}, "description": "MP4"},
        206: {"description": "The requested byte range of the MP4."},
        404: {"model": Message, "description": "No clip: unknown event, still recording, failed or expired."},
    },
)
def event_clip(
    event_id: Annotated[str, Path(pattern=EVENT_ID_PATTERN, description="The event's id.")], server: ServerDep
) -> FileResponse:
    path = server.clips.path(event_id)
    if path is None:
        clip = server.clips.state(event_id)
        why = f"its clip is {clip.state}" + (f" ({clip.error})" if clip.error else "") if clip else "no clip"
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no clip for event {event_id}: {why}")
    # A clip never changes once ready; it lives until retention deletes it.
    return FileResponse(path, media_type="video/mp4", headers={"Cache-Control": "private, max-age=3600"})
