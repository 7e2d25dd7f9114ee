"""Per-camera multi-object trackers behind one small protocol."""

from streamsrv.track.base import Tracker, create_tracker

__all__ = ["Tracker", "create_tracker"]
