"""What the preview is doing now, as ``GET /api/preview/stats`` shows it (``PreviewHub.stats``)."""

from __future__ import annotations

from pydantic import BaseModel, Field


class CameraPreviewStats(BaseModel):
    viewers: dict[str, int] = Field(description="Open viewers by kind (mjpeg, webrtc).")
    frames: int = Field(description="Annotated frames made since the feed started.")
    jpeg_encodes: int = Field(description="JPEG encodings since the feed started (one per frame for all viewers).")
    vp8_encodes: int = Field(description="VP8 encodings since the feed started (one per frame for all viewers).")
    encode_cores: float = Field(0.0, description="CPU cores its drawing and encoding use (over the last 5 s).")
    width: int = 0
    height: int = 0


class PreviewStats(BaseModel):
    """What the preview is doing now; every number is zero when nobody watches."""

    feeds: int = Field(description="Cameras with a running annotate loop (one thread each).")
    viewers: int = Field(description="Open viewers over all cameras.")
    cameras: dict[str, CameraPreviewStats] = Field(default_factory=dict)
    buffered_frames: int = Field(0, description="Frames held: each feed's latest and WebRTC viewers' queues.")
    buffered_bytes: int = Field(0, description="Memory those frames hold (pixels and encodings).")
