"""One VP8 encoder per watched camera, shared by all of its WebRTC viewers.

aiortc encodes per connection: N viewers of a camera cost N encodings of every frame (about 10 ms of CPU each at
960x540). Here a camera's feed encodes each frame once and every WebRTC track sends the same packets; aiortc then
only packetizes them. The price: one bitrate for all viewers (``preview.webrtc_bitrate_kbps``) instead of one
adapted to each, and a new viewer (or one that fell behind) waits for a keyframe, which is made on request and
at least every ``KEYFRAME_INTERVAL_S``.
"""

from __future__ import annotations

import fractions
import time
from dataclasses import dataclass

import av
import numpy as np
import numpy.typing as npt

KEYFRAME_INTERVAL_S = 2.0
VIDEO_CLOCK_HZ = 90_000
TIME_BASE = fractions.Fraction(1, VIDEO_CLOCK_HZ)


@dataclass(frozen=True, slots=True)
class EncodedFrame:
    """One VP8 frame as the encoder made it; ``pts`` counts ``VIDEO_CLOCK_HZ`` ticks."""

    data: bytes
    keyframe: bool
    pts: int


class Vp8Stream:
    """Encodes one camera's preview frames, in order; use from one thread (the feed's)."""

    def __init__(self, bitrate_bps: int) -> None:
        self.bitrate_bps = bitrate_bps
        self._codec: av.VideoCodecContext | None = None
        self._size = (0, 0)
        self._keyframe_wanted = True
        self._last_keyframe = 0.0

    def request_keyframe(self) -> None:
        """Make the next frame a keyframe (a viewer joined or lost packets); safe from any thread."""
        self._keyframe_wanted = True

    def encode(self, i420: npt.NDArray[np.uint8], pts: int) -> EncodedFrame | None:
        """Encode a planar YUV 4:2:0 frame ``(height * 3 / 2, width)``; None if the encoder returned nothing."""
        width, height = i420.shape[1], i420.shape[0] * 2 // 3
        if self._codec is None or (width, height) != self._size:
            self._codec = self._open(width, height)  # a new size starts a new stream, with a keyframe
            self._size = (width, height)
            self._keyframe_wanted = True
        frame = av.VideoFrame.from_ndarray(i420, format="yuv420p")
        frame.pts, frame.time_base = pts, TIME_BASE
        now = time.monotonic()
        if self._keyframe_wanted or now - self._last_keyframe >= KEYFRAME_INTERVAL_S:
            frame.pict_type = av.video.frame.PictureType.I
            self._keyframe_wanted = False
        packets = self._codec.encode(frame)
        if not packets:
            return None
        keyframe = any(p.is_keyframe for p in packets)
        if keyframe:
            self._last_keyframe = now
        return EncodedFrame(b"".join(bytes(p) for p in packets), keyframe, pts)

    def _open(self, width: int, height: int) -> av.VideoCodecContext:
        # aiortc's own VP8 settings (real-time, constant bitrate, no lag) but a faster speed step: -12 instead of
        # -6 costs about a third less CPU per frame at the same size, a fair trade for a preview.
        codec = av.CodecContext.create("libvpx", "w")
        assert isinstance(codec, av.VideoCodecContext)
        codec.width, codec.height = width, height
        codec.bit_rate = self.bitrate_bps
        codec.pix_fmt = "yuv420p"
        codec.gop_size = 3000  # keyframes come when asked for, or every KEYFRAME_INTERVAL_S
        codec.qmin, codec.qmax = 2, 56
        codec.options = {
            "bufsize": str(self.bitrate_bps),
            "cpu-used": "-12",
            "deadline": "realtime",
            "lag-in-frames": "0",
            "minrate": str(self.bitrate_bps),
            "maxrate": str(self.bitrate_bps),
            "noise-sensitivity": "4",
            "overshoot-pct": "15",
            "partitions": "0",
            "static-thresh": "1",
            "undershoot-pct": "100",
        }
        codec.thread_count = 1  # one encoder per camera; its feed thread is its only user
        return codec
