"""``ClipBook``: the main process's record of event clips: which event has which clip in which state, the files
on disk with their retention (total bytes, age), and how many clips ended how (for the metrics).

The decoders write the files; the book only reads their reports (``ClipStatus``) and deletes what retention
drops. Files left by an earlier run are adopted, so retention keeps counting them, and stay servable by the id of
the event whose name they carry.

>>> import tempfile
>>> book = ClipBook(Path(tempfile.mkdtemp()), max_bytes=10**6, max_age_s=3600)
>>> book.start("a" * 32).state
'recording'
>>> book.finish(ClipStatus("door", ("a" * 32,), "skipped", error="disk full"))[0][1].state
'failed'
>>> dict(book.outcomes)
{'skipped': 1}
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from streamsrv.events.model import Clip, ClipState
from streamsrv.ipc.messages import ClipStatus

log = logging.getLogger(__name__)
OUTCOMES = ("ready", "skipped", "failed", "expired")
_MAX_ENTRIES = 100_000  # events remembered; older ones are still found by file name
_MAX_EXITED = 1000  # decoder exits remembered
_LOST = "the camera's decoder stopped while recording the clip (it died or was restarted)"


@dataclass(frozen=True, slots=True)
class ClipFile:
    path: Path
    bytes: int
    created: float


def clip_url(event_id: str) -> str:
    return f"/api/events/{event_id}/clip.mp4"


class ClipBook:
    """Clip states by event and the clip files under ``root``; thread-safe."""

    def __init__(self, root: Path, max_bytes: int, max_age_s: float) -> None:
        self.root, self.max_bytes, self.max_age_s = root, max_bytes, max_age_s
        self._lock = threading.Lock()
        self._states: OrderedDict[str, Clip] = OrderedDict()
        self._paths: dict[str, Path] = {}
        self._files: OrderedDict[Path, ClipFile] = OrderedDict()  # oldest first
        self.outcomes: Counter[str] = Counter()
        # event id -> (camera id, decoder incarnation asked, monotonic deadline of its report)
        self._pending: dict[str, tuple[str, int, float]] = {}
        # decoders known to have exited, newest last: a clip asked of one just before it exited fails at once
        self._exited: OrderedDict[tuple[str, int], None] = OrderedDict()
        self._adopt()

    @property
    def total_bytes(self) -> int:
        with self._lock:
            return sum(f.bytes for f in self._files.values())

    @property
    def file_count(self) -> int:
        with self._lock:
            return len(self._files)

    def start(self, event_id: str, camera_id: str = "", timeout_s: float = 3600.0, incarnation: int = 0) -> Clip:
        """An event's clip is being cut by decoder ``incarnation`` of its camera; it fails when that decoder exits
        without reporting it (``lost``), or without a report within ``timeout_s`` (``overdue``)."""
        with self._lock:
            exited = (camera_id, incarnation) in self._exited
            if exited:
                self.outcomes["failed"] += 1
            else:
                self._pending[event_id] = (camera_id, incarnation, time.monotonic() + timeout_s)
        if exited:
            return self._set(event_id, Clip(url=clip_url(event_id), state="failed", error=_LOST))
        return self._set(event_id, Clip(url=clip_url(event_id), state="recording"))

    def lost(self, camera_id: str, incarnation: int) -> list[tuple[str, str, Clip]]:
        """Decoder ``incarnation`` of a camera exited having reported all it will: fail the clips it still owed,
        (camera id, event id, the failed clip) of each, counted as failed."""
        with self._lock:
            self._exited[(camera_id, incarnation)] = None
            while len(self._exited) > _MAX_EXITED:
                self._exited.popitem(last=False)
        return self._give_up(lambda cam, inc, _: cam == camera_id and inc == incarnation, _LOST)

    def overdue(self) -> list[tuple[str, str, Clip]]:
        """Give up clips that were never reported in time (a backstop for ``lost``): (camera id, event id, the
        failed clip) of each, counted as failed."""
        now = time.monotonic()
        error = "no word from the camera's decoder (it stopped while collecting the clip)"
        return self._give_up(lambda _cam, _inc, deadline: deadline < now, error)

    def _give_up(self, which: Callable[[str, int, float], bool], error: str) -> list[tuple[str, str, Clip]]:
        with self._lock:
            gone = [(eid, cam) for eid, (cam, inc, deadline) in self._pending.items() if which(cam, inc, deadline)]
            for eid, _ in gone:
                del self._pending[eid]
            self.outcomes["failed"] += len(gone)
        for eid, cam in gone:
            log.warning("camera %s: clip of event %s failed: %s", cam, eid, error)
        return [(cam, eid, self._set(eid, Clip(url=clip_url(eid), state="failed", error=error))) for eid, cam in gone]

    def fail(self, event_id: str, error: str) -> Clip:
        """An event's clip cannot be asked for (its decoder is not running)."""
        with self._lock:
            self.outcomes["failed"] += 1
        return self._set(event_id, Clip(url=clip_url(event_id), state="failed", error=error))

    def finish(self, status: ClipStatus) -> list[tuple[str, Clip]]:
        """Take a decoder's report; each of the clip's events with its clip as it now is."""
        state: ClipState = "ready" if status.state == "ready" else "failed"
        error = status.error
        path = Path(status.path) if status.path else None
        if path is not None and status.bytes > self.max_bytes:
            self._unlink(path)
            state, error, outcome = "failed", f"larger than record.max_bytes ({status.bytes} bytes)", "skipped"
        else:
            outcome = status.state if status.state in OUTCOMES else "failed"
        with self._lock:
            self.outcomes[outcome] += 1
            for event_id in status.event_ids:
                self._pending.pop(event_id, None)
            if state == "ready" and path is not None:
                self._files[path] = ClipFile(path, status.bytes, time.time())
                for event_id in status.event_ids:
                    self._paths[event_id] = path
        if outcome != "ready":
            log.warning("camera %s: clip %s: %s", status.camera_id, outcome, error)
        out = [(eid, self._set(eid, Clip(url=clip_url(eid), state=state, error=error))) for eid in status.event_ids]
        self.sweep()
        return out

    def state(self, event_id: str) -> Clip | None:
        with self._lock:
            return self._states.get(event_id)

    def path(self, event_id: str) -> Path | None:
        """The clip file of an event, if it is ready and still kept."""
        self.sweep()
        with self._lock:
            path = self._paths.get(event_id)
            if path is None:  # an event from an earlier run, or forgotten: its own id names the file
                path = next((p for p in self._files if p.stem == event_id), None)
            return path if path is not None and path in self._files else None

    def sweep(self, now: float | None = None) -> None:
        """Delete the oldest clips beyond ``max_age_s`` or beyond ``max_bytes`` in total."""
        now = time.time() if now is None else now
        with self._lock:
            total = sum(f.bytes for f in self._files.values())
            gone: list[Path] = []
            for f in list(self._files.values()):
                if now - f.created <= self.max_age_s and total <= self.max_bytes:
                    break
                del self._files[f.path]
                total -= f.bytes
                gone.append(f.path)
            expired = {eid for eid, p in self._paths.items() if p in gone}
            for eid in expired:
                del self._paths[eid]
                if eid in self._states:
                    self._states[eid] = Clip(url=clip_url(eid), state="expired")
            if gone:
                self.outcomes["expired"] += len(gone)
        for path in gone:
            self._unlink(path)

    def _set(self, event_id: str, clip: Clip) -> Clip:
        with self._lock:
            self._states[event_id] = clip
            self._states.move_to_end(event_id)
            while len(self._states) > _MAX_ENTRIES:
                self._states.popitem(last=False)
        return clip

    def _adopt(self) -> None:
        try:
            found = [(p.stat().st_mtime, p) for p in self.root.glob("*/*.mp4")]
        except OSError:
            return
        for mtime, p in sorted(found):
            self._files[p] = ClipFile(p, p.stat().st_size, mtime)

    @staticmethod
    def _unlink(path: Path) -> None:
        try:
            os.unlink(path)
        except OSError as exc:
            log.warning("cannot delete clip %s: %s", path, exc)
