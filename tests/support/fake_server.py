"""``FakeServer``: a ``ServerApi`` that runs no process, so the real app can be tested in-process and in milliseconds.

Real where it is cheap: the config models and their validation, one ``RuleEngine`` per camera, the event bus
``create_bus`` picks (in-process unless ``events.redis_url``), the ``SnapshotStore`` and snapshot drawing. Canned
where a real one needs decoder or inference processes: every running (enabled) camera is online at once with
fixed stats (``set_state`` changes its state), its pictures are what ``set_frame`` gave, the inference health
is ``health`` (a loaded model by default), and the measured capacity usage is what ``set_usage`` gave (else every
camera unmeasured). Lanes do not open: there is no inference loop.

``feed`` plays the results thread: a FrameResult goes through the camera's rules, its events are published and
snapshotted, and ``subscribe_results`` callbacks (the metrics) see it. ``serve_in_process`` runs the real app
(``create_app``) around one, behind FastAPI's TestClient.

>>> from streamsrv.config.models import AppConfig
>>> server = FakeServer(AppConfig.model_validate({"cameras": [{"id": "door", "url": "rtsp://cam/1"}]}))
>>> server.running_camera_ids(), server.camera_stats("door").state.value
(['door'], 'online')
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from streamsrv.api.app import create_app
from streamsrv.config.models import AppConfig, CameraConfig
from streamsrv.config.record import clip_root
from streamsrv.config.rules import RulesConfig, resolve_rules
from streamsrv.errors import LaneClosed, NotFoundError
from streamsrv.events import Event, SnapshotStore, create_bus
from streamsrv.events.clips import ClipBook
from streamsrv.preview.annotate import event_snapshot
from streamsrv.rules import RuleEngine, RuleOutput
from streamsrv.runtime.capacity import CameraUsage, Usage
from streamsrv.runtime.decoders import Frame
from streamsrv.runtime.inference import InferenceHealth
from streamsrv.runtime.lanes import Lane, ResultCallback
from streamsrv.runtime.protocol import Latest
from streamsrv.runtime.stats import CameraStats
from streamsrv.types import CameraState, FrameResult

LOADED = InferenceHealth(alive=True, model_loaded=True, backend="fake", device="cpu", labels={0: "person"})


def online_stats(camera_id: str) -> CameraStats:
    """What a running camera's stats say in the fake: online, 720p at 25 frames/s, nothing counted yet."""
    return CameraStats(
        camera_id=camera_id,
        state=CameraState.ONLINE,
        codec="h264",
        decoder="cpu",
        width=1280,
        height=720,
        source_fps=25,
    )


class FakeServer:
    """Cameras, rules and events like ``StreamServer``, with canned stats, frames and inference; thread-safe."""

    def __init__(self, cfg: AppConfig, health: InferenceHealth = LOADED) -> None:
        self.cfg = cfg
        self.bus = create_bus(cfg.events)
        ev = cfg.events
        self.snapshots = SnapshotStore(ev.snapshot_max_count, ev.snapshot_max_bytes, ev.snapshot_retention_s)
        self.clips = ClipBook(clip_root(cfg.base_dir, cfg.record), cfg.record.max_bytes, cfg.record.max_age_s)
        self.events_by_type: Counter[tuple[str, str]] = Counter()
        self.health = health
        self.started = False
        self._lock = threading.RLock()
        self._engines: dict[str, RuleEngine] = {}
        self._latest: dict[str, Latest] = {}
        self._stats: dict[str, CameraStats] = {}  # running (enabled) cameras only
        self._frames: dict[str, Frame] = {}
        self._subscribers: list[ResultCallback] = []
        self._usage: Usage | None = None
        for cam in cfg.cameras:
            self._register(cam, resolve_rules(cam.rules, cfg.base_dir, cam.id))

    # -- life cycle ------------------------------------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        return self.health.model_loaded

    def start(self) -> None:
        self.started = True
        for camera_id in self.running_camera_ids():
            self._announce(camera_id, online=True)

    def stop(self) -> None:
        self.started = False
        self.bus.close()

    # -- cameras and rules -----------------------------------------------------------------------------------------
    def add_camera(self, cam: CameraConfig, run_id: str | None = None, first_seq: int = 1) -> None:
        rules = resolve_rules(cam.rules, self.cfg.base_dir, cam.id)
        with self._lock:
            if cam.id in self._engines:
                raise ValueError(f"camera {cam.id!r} already exists")
            self._register(cam, rules, run_id, first_seq)
            self._set_config(cam, present=True)
        if cam.enabled and self.started:
            self._announce(cam.id, online=True)

    def replace_camera(self, cam: CameraConfig) -> None:
        rules = resolve_rules(cam.rules, self.cfg.base_dir, cam.id)
        self.update_rules(cam.id, rules)
        with self._lock:
            self._frames.pop(cam.id, None)
            if cam.enabled:
                self._stats[cam.id] = online_stats(cam.id)
            else:
                self._stats.pop(cam.id, None)
            self._set_config(cam, present=True)

    def remove_camera(self, camera_id: str) -> None:
        with self._lock:
            cam = self.camera_config(camera_id)
            for table in (self._engines, self._latest, self._stats, self._frames):
                table.pop(camera_id, None)
            self._set_config(cam, present=False)

    def camera_config(self, camera_id: str) -> CameraConfig:
        with self._lock:
            for cam in self.cfg.cameras:
                if cam.id == camera_id:
                    return cam
        raise NotFoundError(f"camera {camera_id!r} not found")

    def rules(self, camera_id: str) -> RulesConfig:
        return self._engine(camera_id).rules

    def update_rules(self, camera_id: str, rules: RulesConfig) -> None:
        with self._lock:
            engine = self._engine(camera_id)
            engine.update_rules(rules)
            self._latest[camera_id] = Latest(self._latest[camera_id].result, engine.output())

    def latest(self, camera_id: str) -> Latest:
        with self._lock:
            latest = self._latest.get(camera_id)
        if latest is None:
            raise NotFoundError(f"camera {camera_id!r} not found")
        return latest

    def occupancy(self, camera_id: str) -> Mapping[str, Mapping[str, int]]:
        return self.latest(camera_id).output.occupancy

    def line_counts(self, camera_id: str) -> Mapping[str, Mapping[str, Mapping[str, int]]]:
        return self.latest(camera_id).output.line_counts

    # -- the pipeline, canned --------------------------------------------------------------------------------------
    def running_camera_ids(self) -> list[str]:
        with self._lock:
            return list(self._stats)

    def camera_stats(self, camera_id: str) -> CameraStats:
        with self._lock:
            stats = self._stats.get(camera_id)
        if stats is None:
            raise NotFoundError(f"camera {camera_id!r} is not running")
        return stats

    def all_camera_stats(self) -> list[CameraStats]:
        with self._lock:
            return list(self._stats.values())

    def latest_frame(self, camera_id: str) -> Frame | None:
        self.camera_stats(camera_id)
        with self._lock:
            return self._frames.get(camera_id)

    def frame_at(self, camera_id: str, seq: int) -> Frame | None:
        frame = self.latest_frame(camera_id)
        return frame if frame is not None and frame[0].seq == seq else None

    def inference_health(self) -> InferenceHealth:
        return replace(self.health)

    def capacity_usage(self) -> Usage:
        with self._lock:
            if self._usage is not None:
                return self._usage.model_copy(deep=True)
            cams = [c for c in self.cfg.cameras if c.id in self._stats]
        unmeasured = [
            CameraUsage(
                camera_id=c.id,
                priority=c.priority,
                detect_fps=c.detect_fps,
                effective_detect_fps=c.detect_fps,
                processed_fps=0.0,
                inference_ms_per_frame=0.0,
                decoder_cores=0.0,
            )
            for c in cams
        ]
        return Usage(cameras=unmeasured, cpu_cores=2.0)

    def open_lane(
        self,
        on_result: ResultCallback,
        track: bool = True,
        detect_fps: float = 25.0,
        max_width: int = 3840,
        max_height: int = 2160,
    ) -> Lane:
        raise LaneClosed("the fake server has no inference loop")

    def subscribe_results(self, callback: ResultCallback) -> Callable[[], None]:
        with self._lock:
            self._subscribers.append(callback)
        return lambda: self._subscribers.remove(callback)

    # -- what tests make happen ------------------------------------------------------------------------------------
    def feed(self, result: FrameResult) -> RuleOutput:
        """One processed frame, as the results thread delivers it: through the camera's rules, events published
        (snapshotted on the frame ``set_frame`` gave, if it is this result's), subscribers called."""
        with self._lock:
            engine = self._engine(result.camera_id)
            output = engine.process(result)
            self._latest[result.camera_id] = Latest(result, output)
            subscribers = list(self._subscribers)
        boxed = [e for e in output.events if e.bbox is not None]
        held = self.frame_at(result.camera_id, result.frame.seq) if boxed else None
        for event in boxed:
            if held is None:
                self.snapshots.miss()
            else:
                assert event.bbox is not None
                self.snapshots.put(event.id, event_snapshot(held[1], event.bbox, self.cfg.preview.jpeg_quality))
        for event in output.events:
            self._publish(event)
        for callback in subscribers:
            callback(result)
        return output

    def set_frame(self, camera_id: str, frame: Frame) -> None:
        """The running camera's newest decoded picture from now on."""
        self.camera_stats(camera_id)
        with self._lock:
            self._frames[camera_id] = frame

    def set_usage(self, usage: Usage | None) -> None:
        """What ``capacity_usage`` measures from now on (None: every running camera unmeasured, 2 cores)."""
        with self._lock:
            self._usage = usage

    def set_state(self, camera_id: str, state: CameraState, error: str | None = None) -> None:
        """The running camera's source state; going online or leaving it publishes the camera status event."""
        with self._lock:
            before = self.camera_stats(camera_id)
            self._stats[camera_id] = before.model_copy(update={"state": state, "error": error})
        if (before.state == CameraState.ONLINE) != (state == CameraState.ONLINE):
            self._announce(camera_id, online=state == CameraState.ONLINE)

    # -- internals -------------------------------------------------------------------------------------------------
    def _engine(self, camera_id: str) -> RuleEngine:
        with self._lock:
            engine = self._engines.get(camera_id)
        if engine is None:
            raise NotFoundError(f"camera {camera_id!r} not found")
        return engine

    def _register(self, cam: CameraConfig, rules: RulesConfig, run_id: str | None = None, first_seq: int = 1) -> None:
        engine = RuleEngine(cam.id, rules, run_id=run_id, first_seq=first_seq)
        self._engines[cam.id] = engine
        self._latest[cam.id] = Latest(None, engine.output())
        if cam.enabled:
            self._stats[cam.id] = online_stats(cam.id)

    def _set_config(self, cam: CameraConfig, present: bool) -> None:
        others = [c for c in self.cfg.cameras if c.id != cam.id]
        self.cfg.cameras = [*others, cam] if present else others

    def _announce(self, camera_id: str, online: bool) -> None:
        self._publish(self._engine(camera_id).camera_status(online, time.time()))

    def _publish(self, event: Event) -> None:
        self.events_by_type[(event.camera_id, event.type)] += 1
        self.bus.publish(event)


def app_config(**sections: Any) -> AppConfig:
    """A validated config from plain sections, e.g. ``app_config(cameras=[...], server={"api_key": "k"})``."""
    return AppConfig.model_validate(sections)


@contextmanager
def serve_in_process(
    cfg: AppConfig, api_key: str | None = None, config_path: Path | None = None
) -> Iterator[tuple[TestClient, FakeServer]]:
    """The real app on a ``FakeServer`` for ``cfg`` (loaded from ``config_path``, if given: changes are saved there
    when ``server.persist`` is on), its lifespan running (jobs and previews started), and a client that sends
    ``api_key`` as the bearer token when given."""
    server = FakeServer(cfg)
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    with TestClient(create_app(cfg, server=server, config_path=config_path), headers=headers) as client:
        yield client, server
