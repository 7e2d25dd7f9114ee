"""``StreamServer``: the running system as the API sees it.

It composes the ``Supervisor`` (processes, frames, stats) with each camera's ``RuleEngine``, the
event bus and the snapshot store, and keeps them in step when cameras or rules change. The rule
engines run on the supervisor's results thread (one thread, so engines need no locks of their
own); camera state changes arrive on another thread and take the same per-camera lock.

Example:
    >>> server = StreamServer(load_config("streamsrv.yaml"))  # doctest: +SKIP
    >>> server.start(); server.bus.history(limit=10)  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping

from streamsrv.config.models import AppConfig, CameraConfig
from streamsrv.config.record import clip_root
from streamsrv.config.rules import RulesConfig, resolve_rules
from streamsrv.errors import NotFoundError
from streamsrv.events import Event, EventBus, SnapshotStore, create_bus
from streamsrv.events.clips import ClipBook
from streamsrv.events.model import Clip
from streamsrv.ipc.messages import ClipStatus, RecordRequest
from streamsrv.preview.annotate import event_snapshot
from streamsrv.rules import RuleEngine, RuleOutput
from streamsrv.runtime.capacity import Usage
from streamsrv.runtime.decoders import Frame
from streamsrv.runtime.inference import InferenceHealth
from streamsrv.runtime.lanes import Lane, ResultCallback
from streamsrv.runtime.protocol import Latest
from streamsrv.runtime.stats import CameraStats
from streamsrv.runtime.supervisor import Supervisor
from streamsrv.types import CameraState, FrameResult

log = logging.getLogger(__name__)
_EXTEND_EVERY_S = 1.0  # how often a loitering object's clip is told to keep going
# Beyond max_clip_s, how long a clip may take to be reported before it is given up. A decoder that exits fails its
# clips at once (``_on_decoder_exit``); this is only the backstop for a report that never comes otherwise.
_REPORT_GRACE_S = 60.0


class StreamServer:
    """Cameras, rules and events for one streamsrv instance; thread-safe. It is the ``ServerApi`` the app runs on."""

    def __init__(self, cfg: AppConfig, supervisor: Supervisor | None = None, bus: EventBus | None = None) -> None:
        self.cfg = cfg
        self.supervisor = supervisor or Supervisor(cfg)
        self.bus = bus or create_bus(cfg.events)
        ev = cfg.events
        self.snapshots = SnapshotStore(ev.snapshot_max_count, ev.snapshot_max_bytes, ev.snapshot_retention_s)
        self.clips = ClipBook(clip_root(cfg.base_dir, cfg.record), cfg.record.max_bytes, cfg.record.max_age_s)
        self._lock = threading.RLock()
        self._engines: dict[str, RuleEngine] = {}
        self._engine_locks: dict[str, threading.Lock] = {}
        self._online: set[str] = set()
        self._latest: dict[str, Latest] = {}
        self.events_by_type: Counter[tuple[str, str]] = Counter()  # (camera_id, type) -> n, for metrics
        self._loiter_clips: dict[str, tuple[str, float]] = {}  # camera -> (loiter.start id, pts last extended)
        for cam in cfg.cameras:
            self._register(RuleEngine(cam.id, resolve_rules(cam.rules, cfg.base_dir, cam.id)))
        self.supervisor.subscribe(self._on_result)
        self.supervisor.on_state_change(self._on_state)
        self.supervisor.on_clip(self._on_clip)
        self.supervisor.on_decoder_exit(self._on_decoder_exit)

    @property
    def started(self) -> bool:
        return self.supervisor.started

    def start(self) -> None:
        self.supervisor.start()

    def stop(self) -> None:
        self.supervisor.stop()
        self.bus.close()

    # -- cameras and rules -------------------------------------------------------------------
    def add_camera(self, cam: CameraConfig, run_id: str | None = None, first_seq: int = 1) -> None:
        """Register and start a camera; raises ValueError if the id exists, ConfigError for bad rules.

        ``run_id`` and ``first_seq`` name and start its event sequence (a cluster node continues the camera's).
        """
        rules = resolve_rules(cam.rules, self.cfg.base_dir, cam.id)
        with self._lock:
            if cam.id in self._engines:
                raise ValueError(f"camera {cam.id!r} already exists")
            self._register(RuleEngine(cam.id, rules, run_id=run_id, first_seq=first_seq))
        try:
            if cam.enabled:
                self.supervisor.add_camera(cam)
        except Exception:
            self._forget(cam.id)
            raise
        self._set_config(cam, present=True)

    def replace_camera(self, cam: CameraConfig) -> None:
        """Apply a changed camera: restarts its decoder; counters of rules that keep their names stay."""
        rules = resolve_rules(cam.rules, self.cfg.base_dir, cam.id)
        self._engine(cam.id)
        self.update_rules(cam.id, rules)
        if cam.id in self.supervisor.camera_ids():
            self.supervisor.remove_camera(cam.id)
        if cam.enabled:
            self.supervisor.add_camera(cam)
        self._set_config(cam, present=True)

    def remove_camera(self, camera_id: str) -> None:
        cam = self.camera_config(camera_id)
        if camera_id in self.supervisor.camera_ids():
            self.supervisor.remove_camera(camera_id)
        self._forget(camera_id)
        self._set_config(cam, present=False)

    def next_event_seq(self, camera_id: str) -> int:
        """The sequence number the camera's next event gets; NotFoundError for an unknown camera."""
        engine, lock = self._engine_and_lock(camera_id)
        with lock:
            return engine.events.next_seq

    def camera_config(self, camera_id: str) -> CameraConfig:
        with self._lock:
            for cam in self.cfg.cameras:
                if cam.id == camera_id:
                    return cam
        raise NotFoundError(f"camera {camera_id!r} not found")

    def rules(self, camera_id: str) -> RulesConfig:
        return self._engine(camera_id).rules

    def update_rules(self, camera_id: str, rules: RulesConfig) -> None:
        """Swap a camera's rules at runtime; zones and lines that keep their name keep their state."""
        engine, lock = self._engine_and_lock(camera_id)
        with lock:
            engine.update_rules(rules)
            self._keep(engine, None, engine.output())

    def latest(self, camera_id: str) -> Latest:
        """The camera's newest processed frame and its rules' output; NotFoundError for an unknown camera."""
        with self._lock:
            latest = self._latest.get(camera_id)
        if latest is None:
            raise NotFoundError(f"camera {camera_id!r} not found")
        return latest

    def occupancy(self, camera_id: str) -> Mapping[str, Mapping[str, int]]:
        """Zone -> label -> confirmed objects inside in the camera's latest processed frame."""
        return self.latest(camera_id).output.occupancy

    def line_counts(self, camera_id: str) -> Mapping[str, Mapping[str, Mapping[str, int]]]:
        """Line -> direction name -> label -> crossings since the line was created."""
        return self.latest(camera_id).output.line_counts

    # -- the pipeline, as the API and the preview read it ------------------------------------
    def running_camera_ids(self) -> list[str]:
        """The cameras whose decoders run (registered and enabled)."""
        return self.supervisor.camera_ids()

    def camera_stats(self, camera_id: str) -> CameraStats:
        """A running camera's stats; NotFoundError for an unknown or disabled camera."""
        return self.supervisor.camera_stats(camera_id)

    def all_camera_stats(self) -> list[CameraStats]:
        """The stats of every running camera."""
        return self.supervisor.all_stats()

    def latest_frame(self, camera_id: str) -> Frame | None:
        """A copy of a running camera's newest decoded frame; NotFoundError for an unknown or disabled camera."""
        return self.supervisor.latest_frame(camera_id)

    def frame_at(self, camera_id: str, seq: int) -> Frame | None:
        """Frame ``seq`` of a running camera if its ring still holds it (it holds the last few)."""
        return self.supervisor.frame_at(camera_id, seq)

    def capacity_usage(self) -> Usage:
        """What each running camera and the server's processes use now, and the overload governor's state."""
        return self.supervisor.capacity_usage()

    def inference_health(self) -> InferenceHealth:
        """A consistent copy of the inference process's health."""
        return self.supervisor.inference_health()

    @property
    def ready(self) -> bool:
        """Model loaded and every enabled camera's decoder started."""
        return self.supervisor.ready

    def open_lane(
        self,
        on_result: ResultCallback,
        track: bool = True,
        detect_fps: float = 25.0,
        max_width: int = 3840,
        max_height: int = 2160,
    ) -> Lane:
        """A background input to the inference loop (clip jobs, uploaded images): see ``Supervisor.open_lane``."""
        return self.supervisor.open_lane(on_result, track, detect_fps, max_width, max_height)

    def subscribe_results(self, callback: ResultCallback) -> Callable[[], None]:
        """Call ``callback`` with every processed frame's result (on the results thread); returns the unsubscribe."""
        return self.supervisor.subscribe(callback)

    def _engine(self, camera_id: str) -> RuleEngine:
        return self._engine_and_lock(camera_id)[0]

    def _engine_and_lock(self, camera_id: str) -> tuple[RuleEngine, threading.Lock]:
        # looked up together: a camera removed between two lookups would raise KeyError (a 500), not NotFound
        with self._lock:
            engine, lock = self._engines.get(camera_id), self._engine_locks.get(camera_id)
        if engine is None or lock is None:
            raise NotFoundError(f"camera {camera_id!r} not found")
        return engine, lock

    def _register(self, engine: RuleEngine) -> None:
        with self._lock:
            self._engines[engine.camera_id] = engine
            self._engine_locks[engine.camera_id] = threading.Lock()
            self._latest[engine.camera_id] = Latest(None, engine.output())

    def _keep(self, engine: RuleEngine, result: FrameResult | None, output: RuleOutput) -> None:
        """Store a camera's newest output (with its result, or the previous one after a rules edit), unless the
        camera went meanwhile; called with the engine's lock held, so outputs are stored in the order made."""
        with self._lock:
            previous = self._latest.get(engine.camera_id)
            if previous is not None and self._engines.get(engine.camera_id) is engine:
                self._latest[engine.camera_id] = Latest(result if result is not None else previous.result, output)

    def _forget(self, camera_id: str) -> None:
        with self._lock:
            self._engines.pop(camera_id, None)
            self._engine_locks.pop(camera_id, None)
            self._online.discard(camera_id)
            self._latest.pop(camera_id, None)
            self._loiter_clips.pop(camera_id, None)

    def _set_config(self, cam: CameraConfig, present: bool) -> None:
        with self._lock:
            others = [c for c in self.cfg.cameras if c.id != cam.id]
            self.cfg.cameras = [*others, cam] if present else others

    # -- results and state, from the supervisor's threads ------------------------------------
    def _on_result(self, result: FrameResult) -> None:
        with self._lock:
            engine = self._engines.get(result.camera_id)
            lock = self._engine_locks.get(result.camera_id)
        if engine is None or lock is None:
            return
        with lock:
            output = engine.process(result)
            self._keep(engine, result, output)
        self._snapshot(result, [e for e in output.events if e.bbox is not None])
        for event in output.events:
            self._publish(self._with_clip(event, result.frame.video_ts))
        self._extend_loitering_clip(result.camera_id, output, result.frame.video_ts)
        for camera_id, event_id, clip in self.clips.overdue():
            self._clip_ready(camera_id, event_id, clip)

    def _on_state(self, camera_id: str, state: CameraState, error: str | None) -> None:
        with self._lock:
            engine = self._engines.get(camera_id)
            lock = self._engine_locks.get(camera_id)
            was_online = camera_id in self._online
            if state == CameraState.ONLINE:
                self._online.add(camera_id)
            else:
                self._online.discard(camera_id)
        if engine is None or lock is None or (state == CameraState.ONLINE) == was_online:
            return
        with lock:
            event = engine.camera_status(state == CameraState.ONLINE, time.time())
        self._publish(event)

    def request_clip(self, event: Event, video_ts: float) -> Event:
        """Ask the event's camera for a clip around ``video_ts`` (the event's frame pts, seconds); the event with its
        clip (``recording``, or ``failed`` when the camera's decoder is not running)."""
        rec = self.camera_config(event.camera_id).record
        req = RecordRequest(event.id, video_ts, rec.pre_s, rec.post_s, rec.max_clip_s)
        incarnation = self.supervisor.request_clip(event.camera_id, req)
        if incarnation is not None:
            clip = self.clips.start(event.id, event.camera_id, rec.max_clip_s + _REPORT_GRACE_S, incarnation)
            if event.type == "loiter.start":
                with self._lock:
                    self._loiter_clips[event.camera_id] = (event.id, video_ts)
        else:
            clip = self.clips.fail(event.id, "the camera's decoder is not running")
        return event.model_copy(update={"clip": clip})

    def _with_clip(self, event: Event, video_ts: float) -> Event:
        try:
            rec = self.camera_config(event.camera_id).record
        except NotFoundError:
            return event
        return self.request_clip(event, video_ts) if rec.enabled and event.type in rec.types else event

    def _extend_loitering_clip(self, camera_id: str, output: RuleOutput, video_ts: float) -> None:
        """While objects loiter, the loiter.start's clip stays open (up to ``max_clip_s``): the event lasts."""
        with self._lock:
            held = self._loiter_clips.get(camera_id)
            if held is None or video_ts - held[1] < _EXTEND_EVERY_S:
                return
            if not output.loitering_ids:
                del self._loiter_clips[camera_id]
                return
            self._loiter_clips[camera_id] = (held[0], video_ts)
        rec = self.camera_config(camera_id).record
        req = RecordRequest(held[0], video_ts, rec.pre_s, rec.post_s, rec.max_clip_s, extend_only=True)
        self.supervisor.request_clip(camera_id, req)

    def _on_clip(self, status: ClipStatus) -> None:
        """A decoder finished a clip: tell each of its events' consumers (``clip.ready``), in the camera's sequence."""
        for event_id, clip in self.clips.finish(status):
            self._clip_ready(status.camera_id, event_id, clip)

    def _on_decoder_exit(self, camera_id: str, incarnation: int) -> None:
        """A camera's decoder exited (died, restarted, removed): the clips it was recording are ``failed`` now."""
        for camera, event_id, clip in self.clips.lost(camera_id, incarnation):
            self._clip_ready(camera, event_id, clip)

    def _clip_ready(self, camera_id: str, event_id: str, clip: Clip) -> None:
        try:
            engine, lock = self._engine_and_lock(camera_id)
        except NotFoundError:  # the camera went: nobody numbers its events any more
            return
        with lock:
            event = engine.events.make("clip.ready", time.time(), event_id=event_id, clip=clip)
        self._publish(event)

    def _publish(self, event: Event) -> None:
        self.events_by_type[(event.camera_id, event.type)] += 1
        self.bus.publish(event)

    def _snapshot(self, result: FrameResult, events: list[Event]) -> None:
        """Draw each event's box on the frame the events came from, while the ring still holds it (it holds the
        last few frames; this runs right after inference). Once the ring has moved on the snapshots are counted as
        missed: a newer frame would show the scene after the event, not the event."""
        if not events:
            return
        try:
            got = self.supervisor.frame_at(result.camera_id, result.frame.seq)
        except NotFoundError:  # the camera went meanwhile
            got = None
        if got is None:
            self.snapshots.miss(len(events))
            return
        quality = self.cfg.preview.jpeg_quality
        for event in events:
            assert event.bbox is not None
            self.snapshots.put(event.id, event_snapshot(got[1], event.bbox, quality))
