"""Offline analysis of a recorded file with the live pipeline's parts, as fast as the machine allows.

Same decoder (``VideoSource``), detector, trackers and frame results as ``serve``, but no real-time
pacing and no dropping: a decode thread feeds a bounded queue that blocks, and inference takes
whole batches from it. Output is one JSON line per processed frame.

Example:
    >>> for result in Analyzer(cfg).run("clip.mp4"): print(result.to_dict())  # doctest: +SKIP
"""

from __future__ import annotations

import json
import queue
import threading
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import IO, Any

from streamsrv.config.models import AppConfig, CameraConfig
from streamsrv.config.rules import resolve_rules
from streamsrv.decode.source import DecodedFrame, VideoSource
from streamsrv.infer.backend import create_backend
from streamsrv.infer.detector import Detector
from streamsrv.rules import RuleEngine
from streamsrv.track import Tracker, create_tracker
from streamsrv.types import FrameResult

_END = object()


class Analyzer:
    """Runs detection and tracking over one file; iterate ``run`` for per-frame results."""

    def __init__(self, cfg: AppConfig, detector: Detector | None = None) -> None:
        self.cfg = cfg
        self.detector = detector or Detector(create_backend(cfg.model, cfg.inference), cfg.model, cfg.inference.imgsz)
        self.total_frames: int | None = None

    def run(
        self, path: str, camera: CameraConfig | None = None, detect_fps: float | None = None
    ) -> Iterator[FrameResult]:
        """Yield a FrameResult per processed frame; every frame unless ``detect_fps`` is given."""
        cam = (camera or CameraConfig(id="analyze", url=path)).model_copy(
            update={"url": path, "loop": False, "realtime": False, "detect_fps": detect_fps or 120.0}
        )
        source = VideoSource(cam, realtime=False, skip=detect_fps is not None)
        source.open()
        fps = detect_fps or source.fps or 25.0
        frames = source.frame_count
        self.total_frames = int(frames * min(1.0, fps / source.fps)) if frames and source.fps else None
        tracker = create_tracker(self.cfg.tracker, fps, getattr(self.detector.backend, "device", "cpu"))
        max_batch = self.cfg.inference.max_batch
        handoff: queue.Queue[object] = queue.Queue(maxsize=2 * max_batch)
        errors: list[BaseException] = []
        stop = threading.Event()

        def decode() -> None:
            try:
                for frame in source.frames():
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
            tracks = tracker.update(dets, frame.image, frame.pts_s)
            h, w = frame.image.shape[:2]
            yield FrameResult(
                camera_id=camera_id,
                frame_index=frame.frame_index,
                seq=frame.frame_index,
                capture_ts=frame.pts_s,
                mono_ts=frame.pts_s,
                width=w,
                height=h,
                tracks=tracks,
                labels=self.detector.labels,
                inference_ms=timing.forward_ms,
                batch_size=len(batch),
            )

    def records(
        self, path: str, camera: CameraConfig | None = None, detect_fps: float | None = None
    ) -> Iterator[dict[str, Any]]:
        """Frame, event and summary records for a file, with ``camera``'s rules applied if given."""
        camera_id = camera.id if camera else "analyze"
        rules = resolve_rules(camera.rules, self.cfg.base_dir, camera.id) if camera else resolve_rules(None, None)
        engine = RuleEngine(camera_id, rules)
        frames = 0
        by_type: Counter[str] = Counter()
        for result in self.run(path, camera, detect_fps):
            frames += 1
            yield {"type": "frame", **result.to_dict()}
            for event in engine.process(result):
                by_type[event.type] += 1
                yield {"type": "event", "event": json.loads(event.to_json())}
        yield {
            "type": "summary",
            "camera_id": camera_id,
            "video": path,
            "frames": frames,
            "events": dict(by_type),
            "line_counts": engine.line_counts(),
            "occupancy": engine.occupancy(),
        }


def write_jsonl(records: Iterable[dict[str, Any]], out: IO[str]) -> dict[str, Any]:
    """Write records as JSON lines; returns the summary record."""
    summary: dict[str, Any] = {}
    for record in records:
        out.write(json.dumps(record, separators=(",", ":")) + "\n")
        if record["type"] == "summary":
            summary = record
    out.flush()
    return summary
