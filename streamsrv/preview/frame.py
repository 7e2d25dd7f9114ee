"""A preview frame: one annotated picture shared by every viewer of a camera, with its encoded forms."""

from __future__ import annotations

import threading
from typing import cast

import cv2

from streamsrv.preview.annotate import Image, encode_jpeg
from streamsrv.preview.vp8 import EncodedFrame


class EncodeCounts:
    """How many JPEG and VP8 encodings a feed's frames needed (at most one each per frame)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.jpeg = 0
        self.vp8 = 0

    def add(self, jpeg: int = 0, vp8: int = 0) -> None:
        with self._lock:
            self.jpeg += jpeg
            self.vp8 += vp8


class PreviewFrame:
    """One annotated frame at preview size; its JPEG and I420 forms are made at most once, on first use."""

    def __init__(
        self,
        seq: int,
        image: Image,
        jpeg_quality: int,
        live: bool,
        counts: EncodeCounts | None = None,
    ) -> None:
        image.flags.writeable = False  # shared by every viewer
        self.seq = seq
        self.image = image
        self.live = live  # False for a placeholder (no picture from the camera)
        self._quality = jpeg_quality
        self._counts = counts
        self._lock = threading.Lock()
        self._jpeg: bytes | None = None
        self.vp8: EncodedFrame | None = None  # set by the feed before viewers see the frame

    @property
    def width(self) -> int:
        return int(self.image.shape[1])

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    def jpeg(self) -> bytes:
        with self._lock:
            if self._jpeg is None:
                self._jpeg = encode_jpeg(self.image, self._quality)
                if self._counts is not None:
                    self._counts.add(jpeg=1)
            return self._jpeg

    @property
    def nbytes(self) -> int:
        """Memory the frame holds: pixels and the encodings made so far."""
        vp8 = len(self.vp8.data) if self.vp8 is not None else 0
        return int(self.image.nbytes) + len(self._jpeg or b"") + vp8

    @property
    def has_jpeg(self) -> bool:
        return self._jpeg is not None

    def i420(self) -> Image:
        """Planar YUV 4:2:0, ``(height * 3 / 2, width)``: what video encoders take (PyAV's ``yuv420p``)."""
        return cast(Image, cv2.cvtColor(self.image, cv2.COLOR_BGR2YUV_I420))
