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

    def plus(self, other: CameraPreviewStats) -> CameraPreviewStats:
        """Both feeds of one camera together (it is watched with different layers); the size of either.

        >>> a = CameraPreviewStats(viewers={"mjpeg": 1}, frames=5, jpeg_encodes=5, vp8_encodes=0, width=640, height=360)
        >>> b = CameraPreviewStats(viewers={"mjpeg": 1, "webrtc": 2}, frames=3, jpeg_encodes=3, vp8_encodes=3)
        >>> total = a.plus(b)
        >>> sorted(total.viewers.items()), total.frames, total.vp8_encodes, (total.width, total.height)
        ([('mjpeg', 2), ('webrtc', 2)], 8, 3, (640, 360))
        """
        viewers = {
            kind: self.viewers.get(kind, 0) + other.viewers.get(kind, 0) for kind in {*self.viewers, *other.viewers}
        }
        return CameraPreviewStats(
            viewers=viewers,
            frames=self.frames + other.frames,
            jpeg_encodes=self.jpeg_encodes + other.jpeg_encodes,
            vp8_encodes=self.vp8_encodes + other.vp8_encodes,
            width=self.width or other.width,
            height=self.height or other.height,
        )


class PreviewStats(BaseModel):
    """What the preview is doing now; every number is zero when nobody watches."""

    feeds: int = Field(
        description="Running annotate loops (one thread each): one per watched camera and set of layers asked for."
    )
    viewers: int = Field(description="Open viewers over all cameras.")
    cameras: dict[str, CameraPreviewStats] = Field(default_factory=dict)
    buffered_frames: int = Field(0, description="Frames held: each feed's latest and WebRTC viewers' queues.")
    buffered_bytes: int = Field(0, description="Memory those frames hold (pixels and encodings).")
