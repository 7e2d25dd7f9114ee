"""One camera as the decoders keep it: its config, frame ring, stats and current decoder process.

``Decoders`` (``runtime/decoders.py``) owns the slots and changes them under the supervisor's lock; the slot knows
what one camera costs and how to pace it, for the capacity model and the overload governor.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess

from streamsrv.config.models import CameraConfig
from streamsrv.ipc.frame_ring import FrameRing
from streamsrv.ipc.messages import AddCamera
from streamsrv.ipc.signals import StopFlag
from streamsrv.runtime.capacity import CameraUsage
from streamsrv.runtime.overload import CameraLoad
from streamsrv.runtime.stats import CameraStatsTracker
from streamsrv.runtime.usage import ProcessCpu

_HANG_MARGIN_S = 5.0


@dataclass
class DecoderSlot:
    cfg: CameraConfig
    ring: FrameRing
    stats: CameraStatsTracker
    process: BaseProcess | None = None
    status_conn: Connection | None = None
    incarnation: int = 0  # which start of the decoder ``process`` and ``status_conn`` belong to
    commands: Connection | None = None  # record requests to the decoder
    stop: StopFlag | None = None
    restart_at: float | None = None
    finished: bool = False  # a file that ended: not restarted
    cpu: ProcessCpu = field(default_factory=ProcessCpu)  # its decoder's CPU seconds, over restarts

    @property
    def hang_timeout_s(self) -> float:
        c = self.cfg
        return c.open_timeout_s + c.read_timeout_s + c.stall_timeout_s + _HANG_MARGIN_S

    @property
    def attach(self) -> AddCamera:
        return AddCamera(self.cfg.id, str(self.ring.path), self.cfg.detect_fps)

    def load(self, cam: CameraConfig, stale_after_s: float) -> CameraLoad:
        """The camera as the overload governor reads it, with its frame ages since the last call. ``cam`` is the
        registry's config: priority and target change without a restart."""
        s = self.stats
        s.priority, s.target_ms = cam.priority, cam.frame_age_target_ms(stale_after_s)
        return CameraLoad(cam.id, cam.priority, self.cfg.detect_fps, s.target_ms, s.processed, s.lost, s.take_ages())

    def pace(self, fps: float) -> None:
        """Have the decoder hand on at most ``fps`` frames a second (through its ring); the configured rate or more
        lifts the limit."""
        self.ring.set_time("fps_limit", fps if fps < self.cfg.detect_fps else 0.0)
        self.stats.effective_fps = fps

    def usage(self) -> CameraUsage:
        """What the camera costs now (its preview's share is the API's to add)."""
        s = self.stats
        return CameraUsage(
            camera_id=self.cfg.id,
            priority=s.priority,
            detect_fps=self.cfg.detect_fps,
            effective_detect_fps=s.effective_fps,
            processed_fps=s.meters["processed"].rate(),
            inference_ms_per_frame=s.inference_ms_per_frame,
            decoder_cores=s.cpu.rate(),
        )
