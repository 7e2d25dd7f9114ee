"""Draws what the pipeline sees onto a camera frame: the picture an operator trusts or doubts. Every picture the
server draws or JPEG-encodes is made here: previews, event snapshots and annotated ``/api/detect`` images, all at
``preview.jpeg_quality``.

Boxes and labels use supervision's annotators; zones (filled, with live occupancy), tripwires (with per-direction
counts), trails and the header are drawn with OpenCV. The frame is downscaled first and everything is drawn at
preview size, so the cost does not grow with the camera's resolution. Coordinates of rules and tracks are in the
pixels of the frame the pipeline processed and are scaled here.

Example:
    >>> import numpy as np
    >>> from streamsrv.config.rules import RulesConfig
    >>> annotator = Annotator(max_width=320, max_height=240)
    >>> out = annotator.draw(np.zeros((360, 640, 3), np.uint8), Overlay("door", CameraState.ONLINE, 5.0, RulesConfig()))
    >>> out.shape
    (180, 320, 3)
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import cast

import cv2
import numpy as np
import numpy.typing as npt
import supervision as sv

from streamsrv.config.rules import RulesConfig
from streamsrv.types import CameraState, FrameResult, MotionBox, Tracks

Image = npt.NDArray[np.uint8]

_FONT = cv2.FONT_HERSHEY_SIMPLEX
_WHITE = (255, 255, 255)
_HEADER_BG = (24, 20, 16)
_TENTATIVE = sv.Color(r=150, g=150, b=150)
_LOITER = sv.Color(r=235, g=40, b=40)
_LINE_BGR = (0, 215, 255)
_ZONE_BGR = ((200, 160, 40), (60, 180, 75), (180, 90, 200), (40, 140, 240))
_STATE_BGR = {
    CameraState.ONLINE: (80, 175, 76),
    CameraState.STARTING: (160, 160, 160),
    CameraState.RECONNECTING: (0, 160, 255),
    CameraState.OFFLINE: (110, 110, 110),
    CameraState.ERROR: (60, 60, 220),
}
_ZONE_ALPHA_EMPTY, _ZONE_ALPHA_OCCUPIED = 0.15, 0.32
_HIGHLIGHT_BGR = (0, 200, 255)  # event snapshots and /api/detect boxes
_NO_MOTION, _NO_MOTION_BGR = "NO MOTION", (110, 110, 110)
_MOTION_BGR = (255, 0, 255)


@dataclass(frozen=True, slots=True)
class Overlay:
    """Everything drawn over one frame besides its pixels, read from the running server."""

    camera_name: str
    state: CameraState
    processed_fps: float
    rules: RulesConfig
    result: FrameResult | None = None
    occupancy: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    line_counts: Mapping[str, Mapping[str, Mapping[str, int]]] = field(default_factory=dict)
    stationary_ids: frozenset[int] = frozenset()
    loitering_ids: frozenset[int] = frozenset()
    ts: float | None = None  # the pixels' wall_ts (epoch s); the header shows it
    no_motion: bool = False  # frames were held back for lack of motion since the last drawn one (motion gating)
    motion: tuple[MotionBox, ...] | None = None  # the motion layer: the pixels' moving regions; None: layer off


def preview_size(width: int, height: int, max_width: int, max_height: int) -> tuple[int, int]:
    """The size a ``width`` x ``height`` frame is shown at: fitted inside the maximum, never enlarged, even
    (video encoders need even dimensions).

    >>> preview_size(1280, 720, 960, 540), preview_size(640, 360, 960, 540), preview_size(641, 361, 960, 540)
    ((960, 540), (640, 360), (640, 360))
    """
    scale = min(1.0, max_width / width, max_height / height)
    return max(2, int(width * scale) // 2 * 2), max(2, int(height * scale) // 2 * 2)


class Trails:
    """Recent anchor points (bottom centres, frame pixels) of each confirmed track, over ``seconds`` of frame time.

    A track that is missing from a result is forgotten at once, so the state is bounded by the tracks in view.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._points: dict[int, deque[tuple[float, float, float]]] = {}
        self._last_seq: int | None = None

    def __len__(self) -> int:
        return len(self._points)

    def update(self, result: FrameResult) -> None:
        if result.frame.seq == self._last_seq:
            return
        self._last_seq = result.frame.seq
        t = result.tracks
        anchors = t.anchors("bottom_center")
        present: set[int] = set()
        for i in np.flatnonzero(t.confirmed):
            tid = int(t.track_id[i])
            present.add(tid)
            points = self._points.setdefault(tid, deque())
            points.append((result.frame.mono_ts, float(anchors[i, 0]), float(anchors[i, 1])))
            while points and result.frame.mono_ts - points[0][0] > self.seconds:
                points.popleft()
        for tid in self._points.keys() - present:
            del self._points[tid]

    def points(self, track_id: int) -> npt.NDArray[np.float64]:
        """``(n, 2)`` anchor points of a track, oldest first."""
        pts = self._points.get(track_id)
        if not pts:
            return np.zeros((0, 2))
        return np.array([(x, y) for _, x, y in pts], np.float64)


class Annotator:
    """Draws overlays for one camera; keeps its trails, so use one per camera and one thread at a time."""

    def __init__(self, max_width: int, max_height: int, trail_s: float = 2.0) -> None:
        self.max_width, self.max_height = max_width, max_height
        self.trails = Trails(trail_s)
        self._palette = sv.ColorPalette.DEFAULT
        self._tentative = sv.BoxAnnotator(color=_TENTATIVE, thickness=1)
        self._boxes = sv.BoxAnnotator(color=self._palette, thickness=2, color_lookup=sv.ColorLookup.TRACK)
        self._loitering = sv.BoxAnnotator(color=_LOITER, thickness=4)
        self._labels: sv.LabelAnnotator | None = None

    def draw(self, frame: Image, overlay: Overlay) -> Image:
        """A new image at preview size: ``frame`` (BGR, the processed frame's pixels) with ``overlay`` drawn."""
        h, w = frame.shape[:2]
        out_w, out_h = preview_size(w, h, self.max_width, self.max_height)
        if (out_w, out_h) != (w, h):
            image = cast(Image, cv2.resize(frame, (out_w, out_h), interpolation=cv2.INTER_LINEAR))
        else:
            image = frame.copy()
        text_scale = max(0.4, 0.5 * out_h / 540)
        src_w, src_h = (
            (overlay.result.frame.width, overlay.result.frame.height) if overlay.result is not None else (w, h)
        )
        scale = np.array([out_w / src_w, out_h / src_h])
        self._zones(image, overlay, src_w, src_h, scale, text_scale)
        self._lines(image, overlay, src_w, src_h, scale, text_scale)
        for x1, y1, x2, y2 in overlay.motion or ():
            # fractions of the frame, so no source size is needed; drawn under the tracks, which matter more
            top_left = (round(x1 * out_w), round(y1 * out_h))
            cv2.rectangle(image, top_left, (round(x2 * out_w) - 1, round(y2 * out_h) - 1), _MOTION_BGR, 2, cv2.LINE_4)
        if overlay.result is not None:
            if self.trails.seconds > 0:
                self.trails.update(overlay.result)
            self._tracks(image, overlay, overlay.result, scale, text_scale)
        _header(image, overlay, text_scale)
        return image

    def _zones(
        self, image: Image, overlay: Overlay, src_w: int, src_h: int, scale: npt.NDArray[np.float64], text_scale: float
    ) -> None:
        if not overlay.rules.zones:
            return
        outlines: list[tuple[npt.NDArray[np.int32], tuple[int, int, int], str]] = []
        for i, zone in enumerate(overlay.rules.zones):
            poly = np.round(zone.points_px(src_w, src_h) * scale).astype(np.int32)
            color = _ZONE_BGR[i % len(_ZONE_BGR)]
            counts = overlay.occupancy.get(zone.name, {})
            total = sum(counts.values())
            _fill(image, poly, color, _ZONE_ALPHA_OCCUPIED if total else _ZONE_ALPHA_EMPTY)
            detail = ", ".join(f"{n} {label}" for label, n in sorted(counts.items())) if len(counts) > 1 else ""
            outlines.append((poly, color, f"{zone.name}: {total}" + (f" ({detail})" if detail else "")))
        for poly, color, text in outlines:
            cv2.polylines(image, [poly], True, color, 2, cv2.LINE_AA)
            top = poly[np.argmin(poly[:, 1])]
            _tag(image, text, (int(top[0]), int(top[1])), color, text_scale)

    def _lines(
        self, image: Image, overlay: Overlay, src_w: int, src_h: int, scale: npt.NDArray[np.float64], text_scale: float
    ) -> None:
        for line in overlay.rules.lines:
            pts = line.points_px(src_w, src_h) * scale
            ipts = np.round(pts).astype(np.int32)
            cv2.polylines(image, [ipts], False, _LINE_BGR, 2, cv2.LINE_AA)
            for p in ipts[[0, -1]]:
                cv2.circle(image, (int(p[0]), int(p[1])), 4, _LINE_BGR, -1, cv2.LINE_AA)
            counts = overlay.line_counts.get(line.name, {})
            # Arrows from the middle of the middle segment to each side: walking from the first point to the last,
            # left_to_right crosses towards the right-hand side (y grows downwards on screen).
            k = (len(pts) - 1) // 2
            a, b = pts[k], pts[k + 1]
            mid, d = (a + b) / 2, (b - a) / np.linalg.norm(b - a)
            right = np.array([-d[1], d[0]])
            length = 30 * text_scale / 0.5
            for sign, name in ((1, line.left_to_right), (-1, line.right_to_left)):
                towards = sign * right
                tip = mid + towards * length
                cv2.arrowedLine(image, _pt(mid), _pt(tip), _LINE_BGR, 2, cv2.LINE_AA, tipLength=0.3)
                text = f"{name} {sum(counts.get(name, {}).values())}"
                (tw, th), base = cv2.getTextSize(text, _FONT, text_scale, 1)
                # the box's centre goes beyond the tip by half its own extent in that direction
                reach = abs(towards[0]) * (tw + 6) / 2 + abs(towards[1]) * (th + base + 4) / 2 + 3
                cx, cy = tip + towards * reach
                _tag(
                    image,
                    text,
                    (int(cx - (tw + 6) / 2), int(cy + (th + base + 4) / 2)),
                    _LINE_BGR,
                    text_scale,
                    dark_text=True,
                )
            _tag(image, line.name, (int(ipts[0][0]) + 6, int(ipts[0][1]) - 6), _LINE_BGR, text_scale, dark_text=True)

    def _tracks(
        self, image: Image, overlay: Overlay, result: FrameResult, scale: npt.NDArray[np.float64], text_scale: float
    ) -> None:
        t = result.tracks
        if len(t) == 0:
            return
        box_scale = np.tile(scale, 2).astype(np.float32)
        confirmed = t.filter(t.confirmed)
        ids = confirmed.track_id.tolist()
        if self.trails.seconds > 0:
            for tid in ids:
                pts = self.trails.points(tid)
                if len(pts) > 1:
                    color = self._palette.by_idx(tid).as_bgr()
                    cv2.polylines(image, [np.round(pts * scale).astype(np.int32)], False, color, 2, cv2.LINE_AA)
        self._tentative.annotate(image, _detections(t.filter(~t.confirmed), box_scale))
        boxes = _detections(confirmed, box_scale)
        self._boxes.annotate(image, boxes)
        loitering = np.array([tid in overlay.loitering_ids for tid in ids], bool)
        if loitering.any():
            self._loitering.annotate(image, _detections(confirmed.filter(loitering), box_scale))
        labels = []
        for tid, cid, conf, loiter in zip(ids, confirmed.class_id, confirmed.confidence, loitering, strict=True):
            text = f"#{tid} {result.label_of(int(cid))} {float(conf):.2f}"
            if loiter:
                text = "LOITERING " + text
            elif tid in overlay.stationary_ids:
                text += " still"
            labels.append(text)
        if self._labels is None or self._labels.text_scale != text_scale * 0.9:
            self._labels = sv.LabelAnnotator(
                color=self._palette, color_lookup=sv.ColorLookup.TRACK, text_scale=text_scale * 0.9, text_padding=4
            )
        self._labels.annotate(image, boxes, labels=labels)


def _detections(tracks: Tracks, box_scale: npt.NDArray[np.float32]) -> sv.Detections:
    """Tracks as supervision ``Detections`` at preview scale (the tracker id picks each box's colour)."""
    return sv.Detections(
        xyxy=tracks.xyxy * box_scale,
        confidence=tracks.confidence,
        class_id=tracks.class_id,
        tracker_id=tracks.track_id.astype(np.int64),
    )


def placeholder(camera_name: str, state: CameraState, message: str, width: int, height: int) -> Image:
    """A frame to show while a camera has no picture (starting, offline, disabled)."""
    image = np.full((height, width, 3), 32, np.uint8)
    text_scale = max(0.45, 0.7 * height / 540)
    (tw, th), _ = cv2.getTextSize(message, _FONT, text_scale, 1)
    cv2.putText(
        image, message, ((width - tw) // 2, (height + th) // 2), _FONT, text_scale, (200, 200, 200), 1, cv2.LINE_AA
    )
    _header(image, Overlay(camera_name, state, 0.0, RulesConfig(), ts=time.time()), max(0.4, 0.5 * height / 540))
    return image


def _pt(xy: npt.NDArray[np.float64]) -> tuple[int, int]:
    x, y = np.rint(xy)
    return int(x), int(y)


def _fill(image: Image, poly: npt.NDArray[np.int32], color: tuple[int, int, int], alpha: float) -> None:
    """Tint the inside of a polygon; only its bounding box is touched, so a small zone costs little."""
    h, w = image.shape[:2]
    x0, y0 = np.clip(poly.min(axis=0), 0, [w, h])
    x1, y1 = np.clip(poly.max(axis=0) + 1, 0, [w, h])
    if x1 <= x0 or y1 <= y0:
        return
    mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
    cv2.fillPoly(mask, [poly - [x0, y0]], 255)
    roi = image[y0:y1, x0:x1]
    inside = mask.astype(bool)
    roi[inside] = (roi[inside] * (1 - alpha) + np.array(color) * alpha).astype(np.uint8)


def _header(image: Image, overlay: Overlay, text_scale: float) -> None:
    """A dark bar: camera name on the left; state (unless online), capture time and processed fps on the right."""
    (_, th), base = cv2.getTextSize("Ag", _FONT, text_scale, 1)
    bar_h = th + base + 10
    band = image[:bar_h]
    band[:] = cv2.addWeighted(band, 0.35, np.full_like(band, _HEADER_BG), 0.65, 0)
    y = 5 + th
    cv2.putText(image, overlay.camera_name, (8, y), _FONT, text_scale, _WHITE, 1, cv2.LINE_AA)
    if overlay.no_motion:  # the detector idles: this frame is a max_interval_s refresh (docs/motion.md)
        (nw, _), _ = cv2.getTextSize(overlay.camera_name, _FONT, text_scale, 1)
        (bw, _), _ = cv2.getTextSize(_NO_MOTION, _FONT, text_scale, 1)
        cv2.rectangle(image, (nw + 16, 3), (nw + bw + 28, bar_h - 3), _NO_MOTION_BGR, -1)
        cv2.putText(image, _NO_MOTION, (nw + 22, y), _FONT, text_scale, _WHITE, 1, cv2.LINE_AA)
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(overlay.ts)) if overlay.ts else ""
    right = f"{when}  {overlay.processed_fps:.1f} fps"
    (rw, _), _ = cv2.getTextSize(right, _FONT, text_scale, 1)
    x = image.shape[1] - rw - 8
    cv2.putText(image, right, (x, y), _FONT, text_scale, _WHITE, 1, cv2.LINE_AA)
    if overlay.state != CameraState.ONLINE:
        label = overlay.state.value.upper()
        (sw, _), _ = cv2.getTextSize(label, _FONT, text_scale, 1)
        cv2.rectangle(image, (x - sw - 20, 3), (x - 8, bar_h - 3), _STATE_BGR[overlay.state], -1)
        cv2.putText(image, label, (x - sw - 14, y), _FONT, text_scale, _WHITE, 1, cv2.LINE_AA)


def _tag(
    image: Image,
    text: str,
    org: tuple[int, int],
    color: tuple[int, int, int],
    text_scale: float,
    dark_text: bool = False,
) -> None:
    """Text on a filled box whose bottom-left corner is ``org``, kept inside the image."""
    (tw, th), base = cv2.getTextSize(text, _FONT, text_scale, 1)
    h, w = image.shape[:2]
    x = int(np.clip(org[0], 0, max(0, w - tw - 6)))
    y = int(np.clip(org[1], th + base + 4, h - 1))
    cv2.rectangle(image, (x, y - th - base - 4), (x + tw + 6, y), color, -1)
    cv2.putText(
        image, text, (x + 3, y - base - 1), _FONT, text_scale, (20, 20, 20) if dark_text else _WHITE, 1, cv2.LINE_AA
    )


def encode_jpeg(image: Image, quality: int) -> bytes:
    """``image`` (BGR) as JPEG bytes; RuntimeError if OpenCV cannot encode it."""
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return bytes(buf.tobytes())


def event_snapshot(frame: Image, bbox: tuple[float, ...], quality: int) -> bytes:
    """An event's snapshot: the frame it happened on (BGR, kept unchanged) with the event's box, as JPEG."""
    image = frame.copy()
    x1, y1, x2, y2 = (int(v) for v in bbox)
    cv2.rectangle(image, (x1, y1), (x2, y2), _HIGHLIGHT_BGR, 2)
    return encode_jpeg(image, quality)


def detections_jpeg(image: Image, boxes: list[tuple[tuple[float, float, float, float], str]], quality: int) -> bytes:
    """An uploaded image (BGR, drawn on in place) with each ``(xyxy, text)`` box and its label, as JPEG; lines and
    text grow with the image so they stay readable."""
    scale = max(image.shape[:2]) / 1000
    thickness = max(1, round(2 * scale))
    for xyxy, text in boxes:
        x1, y1, x2, y2 = (round(v) for v in xyxy)
        cv2.rectangle(image, (x1, y1), (x2, y2), _HIGHLIGHT_BGR, thickness)
        cv2.putText(image, text, (x1, max(0, y1 - 4)), _FONT, 0.6 * scale + 0.2, _HIGHLIGHT_BGR, thickness)
    return encode_jpeg(image, quality)
