"""MJPEG over HTTP (``multipart/x-mixed-replace``): one JPEG part per new annotated frame.

Each response pulls the newest frame only when the previous part has been handed to the connection, so a slow
client gets fewer frames instead of a growing queue, and never holds up the feed or other viewers.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from streamsrv.preview.hub import Viewer

BOUNDARY = "streamsrv-frame"
MEDIA_TYPE = f"multipart/x-mixed-replace; boundary={BOUNDARY}"


def part(jpeg: bytes) -> bytes:
    """One multipart part holding a JPEG."""
    head = f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n".encode()
    return head + jpeg + b"\r\n"


async def mjpeg_stream(viewer: Viewer, stop: asyncio.Event) -> AsyncIterator[bytes]:
    """Parts for one viewer until the camera goes away, ``stop`` is set (the server shutting down) or the client
    disconnects; the viewer is closed at the end."""
    # A closed viewer has no next frame: the stream ends after its current part, with a complete body.
    closer = asyncio.create_task(_close_when_set(stop, viewer))
    try:
        while (frame := await viewer.next_frame()) is not None:
            # The feed encodes each frame once for every MJPEG viewer; only a frame made before this viewer
            # arrived can lack its JPEG, and that one is encoded off the event loop.
            yield part(frame.jpeg() if frame.has_jpeg else await asyncio.to_thread(frame.jpeg))
    finally:
        closer.cancel()
        viewer.close()


async def _close_when_set(stop: asyncio.Event, viewer: Viewer) -> None:
    await stop.wait()
    viewer.close()
