"""Drawing one camera's preview frames: the pixels a result was computed on, its boxes and the rules' state.

A ``FrameRenderer`` draws only when something changed (a new frame, result, rules output or camera state); while
the camera has no video it draws a placeholder that says why. The preview hub runs one per feed.
"""

from __future__ import annotations

import time
from typing import Literal

from streamsrv.config.preview import PreviewConfig
from streamsrv.errors import NotFoundError
from streamsrv.preview.annotate import Annotator, Image, Overlay, placeholder, preview_size
from streamsrv.preview.frame import EncodeCounts, PreviewFrame
from streamsrv.runtime.protocol import ServerApi
from streamsrv.runtime.stats import CameraStats
from streamsrv.types import CameraState, FrameRef, FrameResult

Layer = Literal["motion"]
LAYERS: tuple[Layer, ...] = ("motion",)  # optional layers a viewer may ask for; the rest is always drawn
Layers = frozenset[Layer]

# While results keep coming, the pixels a result was computed on are shown with its boxes; when no new result has
# arrived for this long (inference down or far behind), the newest frame is shown without boxes, so the picture
# stays live and shows no boxes that no longer mean anything.
RESULT_STALE_S = 2.0
PLACEHOLDER_REFRESH_S = 1.0


class FrameRenderer:
    """Draws a camera's frames; owns its annotator (trails), so one thread at a time.

    Example:
        >>> renderer = FrameRenderer(server, cfg.preview, "door", layers=frozenset({"motion"}))  # doctest: +SKIP
        >>> frame = renderer.render(seq=1)  # None when nothing changed since the last call  # doctest: +SKIP
    """

    def __init__(
        self,
        server: ServerApi,
        cfg: PreviewConfig,
        camera_id: str,
        counts: EncodeCounts | None = None,
        layers: Layers = frozenset(),
    ) -> None:
        self.server, self.cfg, self.camera_id, self.counts, self.layers = server, cfg, camera_id, counts, layers
        self.annotator = Annotator(cfg.max_width, cfg.max_height, cfg.trail_s)
        self._key: tuple[object, ...] | None = None
        self._drawn: tuple[object, ...] = ()
        self._placeholder_at = 0.0
        self._result_key: tuple[str, int] | None = None
        self._result_seen_at = 0.0
        self._skipped_no_motion = 0  # the camera's count when the last frame was drawn: a rise means idle

    def invalidate(self) -> None:
        """Draw the next frame even if nothing changed."""
        self._key = None

    def render(self, seq: int) -> PreviewFrame | None:
        """A new frame if anything changed since the last call, else None; NotFoundError once the camera is gone."""
        server, cam_id = self.server, self.camera_id
        cam = server.camera_config(cam_id)
        latest = server.latest(cam_id)
        stats = _camera_stats(server, cam_id)
        state = stats.state if stats is not None else CameraState.OFFLINE
        result, out = self._fresh(latest.result), latest.output
        got = self._pixels(result)
        if got is None:
            now = time.monotonic()
            if self._key == ("placeholder", state) and now - self._placeholder_at < PLACEHOLDER_REFRESH_S:
                return None
            self._key, self._placeholder_at = ("placeholder", state), now
            w, h = (stats.width, stats.height) if stats is not None and stats.width else (1280, 720)
            w, h = preview_size(w, h, self.cfg.max_width, self.cfg.max_height)
            message = "camera disabled" if not cam.enabled else f"{state.value}: waiting for video"
            if stats is not None and stats.error:
                message = stats.error[:80]
            image = placeholder(cam.display_name, state, message, w, h)
            return PreviewFrame(seq, image, self.cfg.jpeg_quality, False, self.counts)
        ref, pixels = got
        key = (ref.seq, id(result), id(out), state)
        if key == self._key:
            return None
        self._key, self._drawn = key, (result, out)  # kept alive, so no new object can take their ids in the key
        skipped, self._skipped_no_motion = self._skipped_no_motion, stats.skipped_no_motion if stats else 0
        overlay = Overlay(
            camera_name=cam.display_name,
            state=state,
            processed_fps=stats.processed_fps if stats is not None else 0.0,
            rules=out.rules,
            result=result,
            occupancy=out.occupancy,
            line_counts=out.line_counts,
            stationary_ids=out.stationary_ids,
            loitering_ids=out.loitering_ids,
            ts=ref.wall_ts,
            no_motion=self._skipped_no_motion > skipped,
            motion=ref.motion if "motion" in self.layers else None,  # the regions of the pixels drawn
        )
        image = self.annotator.draw(pixels, overlay)
        return PreviewFrame(seq, image, self.cfg.jpeg_quality, True, self.counts)

    def _fresh(self, result: FrameResult | None) -> FrameResult | None:
        """``result`` unless it is the same one as for longer than RESULT_STALE_S."""
        now = time.monotonic()
        if result is None:
            return None
        if (result.camera_id, result.frame.seq) != self._result_key:
            self._result_key, self._result_seen_at = (result.camera_id, result.frame.seq), now
        return result if now - self._result_seen_at < RESULT_STALE_S else None

    def _pixels(self, result: FrameResult | None) -> tuple[FrameRef, Image] | None:
        server = self.server
        try:
            if result is not None:
                # the frame this result was computed on, while the ring still holds it (it holds the last few)
                got = server.frame_at(self.camera_id, result.frame.seq)
                if got is not None:
                    return got
            return server.latest_frame(self.camera_id)
        except NotFoundError:  # registered but not running (disabled)
            return None


def _camera_stats(server: ServerApi, camera_id: str) -> CameraStats | None:
    try:
        return server.camera_stats(camera_id)
    except NotFoundError:
        return None
