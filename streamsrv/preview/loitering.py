"""Which tracks are loitering, for the preview to highlight them."""

from __future__ import annotations

import threading

from streamsrv.events import EventRecord
from streamsrv.types import FrameResult


class LoiterWatch:
    """Which tracks are loitering, per camera, from the ``loiter.start``/``loiter.end`` events on the bus.

    Ids are pruned to the tracks of the latest result on every read and start event, so an id whose end was
    reported under another id (after a tracker id switch) does not linger.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ids: dict[str, set[int]] = {}

    def on_event(self, record: EventRecord, present: FrameResult | None) -> None:
        e = record.event
        if e.track_id is None:
            return
        with self._lock:
            ids = self._ids.setdefault(e.camera_id, set())
            if e.type == "loiter.start":
                if present is not None:
                    ids &= set(present.tracks.track_id.tolist())
                ids.add(e.track_id)
            else:
                ids.discard(e.track_id)

    def ids(self, camera_id: str, result: FrameResult | None) -> frozenset[int]:
        with self._lock:
            ids = self._ids.get(camera_id, set())
            if result is not None:
                ids &= set(result.tracks.track_id.tolist())
            return frozenset(ids)

    def forget(self, camera_id: str) -> None:
        with self._lock:
            self._ids.pop(camera_id, None)
