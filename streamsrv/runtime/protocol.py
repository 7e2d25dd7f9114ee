"""``ServerApi``: what the HTTP API needs of the running server, and nothing more.

The app (``streamsrv.api.app.create_app``), its routers, the camera registry, the metrics and the preview hub take
any ``ServerApi``. ``StreamServer`` is the one that runs cameras; the API tests build the app around
``tests/support/fake_server.py``'s, which runs none. mypy checks that ``StreamServer`` conforms wherever the
app is built from one.

Example:
    >>> app = create_app(cfg, server=StreamServer(cfg))  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from streamsrv.config.models import AppConfig, CameraConfig
from streamsrv.config.rules import RulesConfig
from streamsrv.events import EventBus, SnapshotStore
from streamsrv.events.clips import ClipBook
from streamsrv.jobs.shared import SharedInference
from streamsrv.rules import RuleOutput
from streamsrv.runtime.capacity import Usage
from streamsrv.runtime.decoders import Frame
from streamsrv.runtime.lanes import ResultCallback
from streamsrv.runtime.stats import CameraStats
from streamsrv.types import FrameResult


@dataclass(frozen=True, slots=True)
class Latest:
    """A camera's newest processed frame and what its rules made of it, taken together so they agree.

    ``result`` is None before the first frame; ``output`` is then (and right after a rules edit) the rules' state
    without a frame's events.
    """

    result: FrameResult | None
    output: RuleOutput


class ServerApi(SharedInference, Protocol):
    """Cameras, rules, events and the pipeline's state, as the API reads and changes them; thread-safe.

    Unknown cameras raise ``NotFoundError`` everywhere. Besides these, ``open_lane`` and ``inference_health``
    (``SharedInference``) serve jobs and ``/api/detect``.
    """

    @property
    def cfg(self) -> AppConfig:
        """The running config; ``cfg.cameras`` is the registry (the camera registry rewrites it)."""
        ...

    @property
    def bus(self) -> EventBus: ...

    @property
    def snapshots(self) -> SnapshotStore: ...

    @property
    def clips(self) -> ClipBook:
        """Event clips: states by event, the files kept, outcome counts."""
        ...

    @property
    def events_by_type(self) -> Mapping[tuple[str, str], int]:
        """(camera id, event type) -> events published, for the metrics."""
        ...

    @property
    def started(self) -> bool: ...

    @property
    def ready(self) -> bool:
        """Model loaded and every enabled camera's decoder started."""
        ...

    def start(self) -> None: ...

    def stop(self) -> None: ...

    # -- cameras and rules -----------------------------------------------------------------------------------------
    def add_camera(self, cam: CameraConfig, run_id: str | None = None, first_seq: int = 1) -> None:
        """Register and start a camera; ValueError if the id exists, ConfigError for bad rules. ``run_id`` and
        ``first_seq`` name and start its event sequence (a cluster node continues the camera's)."""
        ...

    def replace_camera(self, cam: CameraConfig) -> None: ...

    def remove_camera(self, camera_id: str) -> None: ...

    def camera_config(self, camera_id: str) -> CameraConfig: ...

    def rules(self, camera_id: str) -> RulesConfig: ...

    def update_rules(self, camera_id: str, rules: RulesConfig) -> None: ...

    def latest(self, camera_id: str) -> Latest: ...

    def occupancy(self, camera_id: str) -> Mapping[str, Mapping[str, int]]: ...

    def line_counts(self, camera_id: str) -> Mapping[str, Mapping[str, Mapping[str, int]]]: ...

    # -- the pipeline ----------------------------------------------------------------------------------------------
    def running_camera_ids(self) -> list[str]: ...

    def camera_stats(self, camera_id: str) -> CameraStats:
        """NotFoundError for a disabled camera too (it has no stats)."""
        ...

    def all_camera_stats(self) -> list[CameraStats]: ...

    def capacity_usage(self) -> Usage:
        """What each running camera costs now (preview excluded: the app measures that), the processes' CPU, the
        GPU's, and the overload governor's state; the capacity model's input."""
        ...

    def latest_frame(self, camera_id: str) -> Frame | None: ...

    def frame_at(self, camera_id: str, seq: int) -> Frame | None: ...

    def subscribe_results(self, callback: ResultCallback) -> Callable[[], None]:
        """Call ``callback`` with every processed frame's result (on the results thread); returns the unsubscribe."""
        ...
