"""Per-camera multi-object trackers behind one small protocol (``base.Tracker``), and the factory."""

from streamsrv.config.models import TrackerConfig
from streamsrv.track.base import Tracker

__all__ = ["Tracker", "create_tracker"]


def create_tracker(cfg: TrackerConfig, fps: float, device: str = "cpu") -> Tracker:
    """A new tracker for one camera processed at about ``fps`` frames/s."""
    # Imported on use: both trackers load torch (ultralytics, deep-sort-realtime), and the API process imports this
    # package through the jobs' record building without ever tracking.
    if cfg.type == "deepsort":
        from streamsrv.track.deepsort import DeepSortTracker

        return DeepSortTracker(cfg, fps, device)
    from streamsrv.track.bytetrack import ByteTracker

    return ByteTracker(cfg, fps)
