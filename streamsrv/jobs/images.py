"""Single images (``POST /api/detect``) through one shared untracked background lane of the inference loop.

At most ``jobs.max_detect_inflight`` images are in flight; a request takes its place (``reserve``) before its upload
is decoded, so the limit is checked once, here, and a refused request costs no decoding.

Example:
    >>> images = ImageLane(server, max_inflight=4)  # doctest: +SKIP
    >>> ticket = images.reserve()  # doctest: +SKIP
    >>> images.detect(ticket, bgr_image).result(timeout=30).tracks  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import dataclasses
import queue
import threading
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field
from typing import cast

import cv2
import numpy as np
import numpy.typing as npt

from streamsrv.errors import Busy, LaneClosed
from streamsrv.jobs.shared import SharedInference
from streamsrv.runtime.lanes import Lane
from streamsrv.types import FrameResult

Image = npt.NDArray[np.uint8]
IMAGE_MAX_SIDE = 4096
_IMAGE_SUBMIT_TIMEOUT_S = 60.0


@dataclass(eq=False)
class ImageTicket:
    """One image's place among those in flight, held until its ``result`` is done; cancelling ``result`` gives the
    place back (a request whose upload turned out unusable)."""

    number: int
    result: Future[FrameResult] = field(default_factory=Future)


class ImageLane:
    """Single images through one shared untracked background lane, opened on first use; thread-safe.

    ``detect`` resolves a ticket's future with the image's FrameResult, boxes in the image's own pixels. One thread
    writes the images into the lane (a lane has one writer), numbering them through ``frame_index``; results come
    back on the supervisor's results thread and find their future by that number, so a lost result can never answer
    another image's request.
    """

    def __init__(self, inference: SharedInference, max_inflight: int) -> None:
        self._inference = inference
        self.max_inflight = max_inflight
        self._lock = threading.Lock()
        self._pending: dict[int, tuple[Future[FrameResult], int, int]] = {}  # number -> (future, width, height)
        self._count = 0
        self._todo: queue.Queue[tuple[int, Image] | None] = queue.Queue()
        self._lane: Lane | None = None
        self._writer: threading.Thread | None = None
        self._closed = False

    def reserve(self) -> ImageTicket:
        """A place for one image. Raises Busy, the one answer to too many images at once, when ``max_inflight``
        are in flight already; LaneClosed while the server stops."""
        with self._lock:
            if self._closed:
                raise LaneClosed("the server is stopping")
            if len(self._pending) >= self.max_inflight:
                raise Busy(f"{self.max_inflight} images are being detected already (jobs.max_detect_inflight)", 1)
            self._count += 1
            ticket = ImageTicket(self._count)
            self._pending[ticket.number] = (ticket.result, 0, 0)
            if self._writer is None:
                self._writer = threading.Thread(target=self._write, name="streamsrv-image-lane", daemon=True)
                self._writer.start()
        ticket.result.add_done_callback(lambda _: self._forget(ticket.number))
        return ticket

    def detect(self, ticket: ImageTicket, image: Image) -> Future[FrameResult]:
        """Queue the BGR image for a reserved place; its result (or error) arrives at the returned future."""
        h, w = image.shape[:2]
        with self._lock:
            if ticket.number not in self._pending:  # cancelled, or failed by close()
                return ticket.result
            self._pending[ticket.number] = (ticket.result, w, h)
        self._todo.put((ticket.number, image))
        return ticket.result

    def close(self) -> None:
        with self._lock:
            self._closed = True
            pending = [fut for fut, _, _ in self._pending.values()]
            lane, writer = self._lane, self._writer
        self._todo.put(None)
        if lane is not None:
            lane.close()
        for fut in pending:
            with contextlib.suppress(InvalidStateError):
                fut.set_exception(LaneClosed("the server is stopping"))
        if writer is not None:
            writer.join(timeout=5)

    def _forget(self, number: int) -> None:
        with self._lock:
            self._pending.pop(number, None)

    def _write(self) -> None:
        while (item := self._todo.get()) is not None:
            number, image = item
            with self._lock:
                entry = self._pending.get(number)
            if entry is None:  # the caller gave up already
                continue
            try:
                lane = self._lane or self._open()
                lane.submit(_fit(image, IMAGE_MAX_SIDE), frame_index=number, timeout_s=_IMAGE_SUBMIT_TIMEOUT_S)
            except Exception as exc:  # the request that sent it reports it
                with contextlib.suppress(InvalidStateError):
                    entry[0].set_exception(exc)

    def _open(self) -> Lane:
        lane = self._inference.open_lane(
            self._on_result, track=False, max_width=IMAGE_MAX_SIDE, max_height=IMAGE_MAX_SIDE
        )
        with self._lock:
            self._lane = lane
        return lane

    def _on_result(self, result: FrameResult) -> None:
        with self._lock:
            entry = self._pending.pop(result.frame.frame_index, None)
        if entry is None:
            return
        fut, w, h = entry
        ref = result.frame
        if (w, h) != (ref.width, ref.height):  # scaled down to fit the lane: boxes back to the image's pixels
            t = result.tracks
            xyxy = (t.xyxy * np.array([w / ref.width, h / ref.height] * 2, np.float32)).astype(np.float32)
            tracks = dataclasses.replace(t, xyxy=xyxy)
            result = dataclasses.replace(result, tracks=tracks, frame=dataclasses.replace(ref, width=w, height=h))
        with contextlib.suppress(InvalidStateError):
            fut.set_result(result)


def _fit(image: Image, max_side: int) -> Image:
    h, w = image.shape[:2]
    scale = max_side / max(h, w)
    if scale >= 1:
        return image
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cast(Image, cv2.resize(image, size, interpolation=cv2.INTER_AREA))
