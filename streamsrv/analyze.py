"""Offline analysis of a recorded file with the live pipeline's parts, as fast as the machine allows.

Same decoder (``VideoSource``), detector, trackers and frame results as ``serve``, but no real-time
pacing and no dropping: a decode thread feeds a bounded queue that blocks, and inference takes
whole batches from it. Output is one JSON line per processed frame.

The records themselves (frame, event, summary) are built by ``streamsrv.jobs.records``, which the jobs API shares
for results of the shared live inference loop.

Example:
    >>> for result in Analyzer(cfg).run("clip.mp4"): print(result.to_dict())  # doctest: +SKIP
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any

from streamsrv.config.models import AppConfig, CameraConfig
from streamsrv.config.motion import MotionConfig
from streamsrv.config.rules import resolve_rules
from streamsrv.decode.motion import MotionGate, gated
from streamsrv.decode.source import DecodedFrame, VideoSource
from streamsrv.infer.backend import create_backend
from streamsrv.jobs.records import build_records, jsonl_line
from streamsrv.rules import RuleEngine
from streamsrv.track import Tracker, create_tracker
from streamsrv.types import FrameRef, FrameResult

if TYPE_CHECKING:
    from streamsrv.infer.detector import Detector

_END = object()


class Analyzer:
    """Runs detection and tracking over one file; iterate ``run`` for per-frame results."""

    def __init__(self, cfg: AppConfig, detector: Detector | None = None) -> None:
        # Imported here: the jobs API shares this module's record building and must not load torch.
        from streamsrv.infer.detector import Detector

        self.cfg = cfg
        self.detector = detector or Detector(create_backend(cfg.model, cfg.inference), cfg.model, cfg.inference.imgsz)
        self.total_frames: int | None = None
        self.gate: MotionGate | None = None  # of the latest run: its handed and skipped_no_motion counts

    def run(
        self,
        path: str,
        camera: CameraConfig | None = None,
        detect_fps: float | None = None,
        motion_gating: bool = True,
    ) -> Iterator[FrameResult]:
        """Yield a FrameResult per processed frame: every frame (or frames spaced to ``detect_fps``) that the camera's
        motion gate hands on, as a live camera would; all of them with ``motion_gating`` off."""
        video = open_video(path, camera, detect_fps, motion_gating)
        cam, source, fps = video.camera, video.source, video.fps
        self.total_frames, self.gate = video.total_frames, video.gate
        tracker = create_tracker(self.cfg.tracker, fps, getattr(self.detector.backend, "device", "cpu"))
        max_batch = self.cfg.inference.max_batch
        handoff: queue.Queue[object] = queue.Queue(maxsize=2 * max_batch)
        errors: list[BaseException] = []
        stop = threading.Event()

        def decode() -> None:
            try:
                for frame in video.frames():
                    while not stop.is_set():
                        try:
                            handoff.put(frame, timeout=0.2)
                            break
                        except queue.Full:
                            continue
                    if stop.is_set():
                        return
            except BaseException as exc:  # re-raised in the consumer so the CLI reports it
                errors.append(exc)
            finally:
                handoff.put(_END)

        thread = threading.Thread(target=decode, name="streamsrv-analyze-decode", daemon=True)
        thread.start()
        try:
            done = False
            while not done:
                batch: list[DecodedFrame] = []
                item = handoff.get()
                while item is not _END:
                    assert isinstance(item, DecodedFrame)
                    batch.append(item)
                    if len(batch) >= max_batch:
                        break
                    try:
                        item = handoff.get_nowait()
                    except queue.Empty:
                        break
                done = item is _END
                if batch:
                    yield from self._process(cam.id, batch, tracker)
            if errors:
                raise errors[0]
        finally:
            stop.set()
            thread.join(timeout=5)
            source.close()

    def _process(self, camera_id: str, batch: list[DecodedFrame], tracker: Tracker) -> Iterator[FrameResult]:
        detections = self.detector.detect([f.image for f in batch])
        timing = self.detector.last_timing
        for frame, dets in zip(batch, detections, strict=True):
            h, w = frame.image.shape[:2]
            ref = FrameRef(
                camera_id, frame.frame_index, frame.frame_index, w, h, frame.wall_ts, frame.mono_ts, frame.video_ts
            )
            yield FrameResult(
                frame=ref,
                tracks=tracker.update(dets, frame.image, ref.time_s("video")),
                labels=self.detector.labels,
                inference_ms=timing.forward_ms,
                batch_size=len(batch),
            )

    def records(
        self,
        path: str,
        camera: CameraConfig | None = None,
        detect_fps: float | None = None,
        motion_gating: bool = True,
    ) -> Iterator[dict[str, Any]]:
        """Frame, event and summary records for a file, with ``camera``'s rules applied if given."""
        camera_id = camera.id if camera else "analyze"
        rules = resolve_rules(camera.rules, self.cfg.base_dir, camera.id) if camera else resolve_rules(None, None)
        engine = RuleEngine(camera_id, rules, clock="video")
        return build_records(self.run(path, camera, detect_fps, motion_gating), engine, path, lambda: self.gate)


@dataclass
class OpenVideo:
    """An opened file or stream and the frames analysis takes from it."""

    camera: CameraConfig
    source: VideoSource
    fps: float  # of the frames handed on: detect_fps, or the source's own rate
    total_frames: int | None  # of those frames, when the container declares a length (before motion gating)
    gate: MotionGate

    def frames(self) -> Iterator[DecodedFrame]:
        """The frames the motion gate hands on, as the camera's decoder process would."""
        return gated(self.source.frames(), self.gate)


def open_video(
    path: str, camera: CameraConfig | None = None, detect_fps: float | None = None, motion_gating: bool = True
) -> OpenVideo:
    """Open ``path`` for analysis as fast as it decodes: every frame, or frames spaced to ``detect_fps``, that the
    camera's motion gate hands on (all of them with ``motion_gating`` off).

    Raises SourceError when it cannot be opened.
    """
    cam = (camera or CameraConfig(id="analyze", url=path)).model_copy(
        update={"url": path, "loop": False, "realtime": False, "detect_fps": detect_fps or 120.0}
    )
    source = VideoSource(cam, realtime=False, skip=detect_fps is not None)
    source.open()
    fps = detect_fps or source.fps or 25.0
    frames = source.frame_count
    total = int(frames * min(1.0, fps / source.fps)) if frames and source.fps else None
    motion = cam.motion if motion_gating else MotionConfig(enabled=False)
    return OpenVideo(cam, source, fps, total, MotionGate(motion))


def write_jsonl(records: Iterable[dict[str, Any]], out: IO[str]) -> dict[str, Any]:
    """Write records as JSON lines; returns the summary record."""
    summary: dict[str, Any] = {}
    for record in records:
        out.write(jsonl_line(record))
        if record["type"] == "summary":
            summary = record
    out.flush()
    return summary
