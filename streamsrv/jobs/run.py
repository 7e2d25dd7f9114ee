"""One job over its clip: frames through its own tracked background lane, results in order, progress, records.

The clip is decoded exactly as ``streamsrv analyze`` does (``open_video``: every frame, or frames spaced to
``detect_fps``) on a feeder thread, which hands the frames to the job's lane (lossless; live cameras always go
first). The in-order results become analyze's frame, event and summary records with a fresh ``RuleEngine`` over
the job's rules. A job waits for inference patiently, but not forever: the live cameras may keep it busy, yet the
background lane's starvation guard still takes a frame every ``inference.background_max_wait_s``.
"""

from __future__ import annotations

import math
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from streamsrv.analyze import OpenVideo, open_video
from streamsrv.config.models import JobsConfig
from streamsrv.jobs.records import build_records, jsonl_line
from streamsrv.jobs.shared import SharedInference
from streamsrv.jobs.store import StoredJob
from streamsrv.rules import RuleEngine
from streamsrv.runtime.lanes import Lane
from streamsrv.types import FrameResult

INFERENCE_PATIENCE_S = 300.0
_POLL_S = 0.25


class JobStopped(Exception):
    """The job was deleted, or the server is stopping."""


@dataclass(frozen=True, slots=True)
class _End:
    submitted: int


class JobRun:
    """One running job. ``lock`` is the manager's: it guards the job's fields, which the API reads meanwhile, and
    ``on_frame`` (called with it held) counts each analysed frame for the manager's stats."""

    def __init__(
        self,
        stored: StoredJob,
        inference: SharedInference,
        cfg: JobsConfig,
        max_result_bytes: int,
        lock: threading.Condition,
        on_frame: Callable[[], None],
    ) -> None:
        self.stored = stored
        self.stop = threading.Event()
        self.deleted = False
        self.lane: Lane | None = None
        self._inference = inference
        self._cfg = cfg
        self._max_result_bytes = max_result_bytes
        self._lock = lock
        self._on_frame = on_frame

    def analyse(self) -> bytes:
        """The job's records as JSON lines. Raises JobStopped when halted, or what failed the job."""
        job = self.stored.job
        self._wait_for_model()
        video = open_video(self.stored.source, None, job.detect_fps, job.motion_gating)
        results: queue.Queue[object] = queue.Queue()
        feeder = threading.Thread(target=self._feed, args=(video, results), name=f"streamsrv-job-feed-{job.id}")
        try:
            cam = video.camera
            with self._lock:
                if self.stop.is_set():
                    raise JobStopped
                self.lane = self._inference.open_lane(results.put, True, video.fps, cam.max_width, cam.max_height)
                cap = math.ceil(self._cfg.max_video_s * video.fps)
                job.total_frames = min(video.total_frames, cap) if video.total_frames else None
            feeder.start()
            engine = RuleEngine(job.id, job.rules, clock="video")
            lines: list[bytes] = []
            size = 0
            for record in build_records(self._results(results), engine, job.video, lambda: video.gate):
                line = jsonl_line(record).encode()
                size += len(line)
                if size > self._max_result_bytes:
                    raise ValueError(
                        f"the result grew past jobs.result_store_bytes ({self._max_result_bytes} bytes); "
                        "analyse fewer frames (detect_fps) or a shorter clip"
                    )
                lines.append(line)
            return b"".join(lines)
        finally:
            with self._lock:
                self.halt()
            if feeder.is_alive():
                feeder.join(timeout=30)
            video.source.close()

    def halt(self) -> None:
        """Stop feeding and close the lane; called with the lock held."""
        self.stop.set()
        if self.lane is not None:
            self.lane.close()

    def _wait_for_model(self) -> None:
        deadline = time.monotonic() + INFERENCE_PATIENCE_S
        while not self._inference.inference_health().model_loaded:
            if self.stop.wait(_POLL_S):
                raise JobStopped
            if time.monotonic() > deadline:
                raise TimeoutError(f"the model was not loaded within {INFERENCE_PATIENCE_S:g}s")

    def _feed(self, video: OpenVideo, out: queue.Queue[object]) -> None:
        """Decode and hand frames to the job's lane, which waits for room (lossless); runs on its own thread."""
        submitted = 0
        first_pts: float | None = None
        try:
            for frame in video.frames():
                first_pts = frame.video_ts if first_pts is None else first_pts
                if frame.video_ts - first_pts >= self._cfg.max_video_s:
                    self.stored.job.truncated = True
                    break
                lane = self.lane
                if self.stop.is_set() or lane is None:
                    break
                lane.submit(frame.image, frame.video_ts, frame.frame_index, timeout_s=INFERENCE_PATIENCE_S)
                submitted += 1
        except Exception as exc:  # handed to the consumer, which fails the job with it
            out.put(exc)
        finally:
            out.put(_End(submitted))

    def _results(self, results: queue.Queue[object]) -> Iterator[FrameResult]:
        """The lane's results in order (``build_records`` names them after the job)."""
        job = self.stored.job
        expected: int | None = None
        received = 0
        last = time.monotonic()
        while expected is None or received < expected:
            if self.stop.is_set():
                raise JobStopped
            try:
                item = results.get(timeout=_POLL_S)
            except queue.Empty:
                if time.monotonic() - last > INFERENCE_PATIENCE_S:
                    raise TimeoutError(f"inference returned no frame for {INFERENCE_PATIENCE_S:g}s") from None
                continue
            last = time.monotonic()
            if isinstance(item, _End):
                expected = item.submitted
                continue
            if isinstance(item, Exception):
                if self.stop.is_set():
                    raise JobStopped  # the lane was closed under the feeder
                raise item
            assert isinstance(item, FrameResult)
            if item.frame.seq != received + 1:
                raise ValueError(
                    f"frame results were lost (got #{item.frame.seq} after #{received}); run the job again"
                )
            received += 1
            with self._lock:
                job.frames_done = received
                self._on_frame()
                if job.total_frames:
                    job.progress = round(min(99.9, 100 * received / job.total_frames), 1)
            yield item
