"""What jobs and single images need of the live inference loop, and nothing more.

``StreamServer`` provides it in the server (and ``Supervisor`` in tests that run the pipeline without rules):

>>> manager = JobManager(server, cfg)  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Protocol

from streamsrv.runtime.inference import InferenceHealth
from streamsrv.runtime.lanes import Lane, ResultCallback


class SharedInference(Protocol):
    """Background lanes into the shared inference loop, and the loop's health."""

    def open_lane(
        self,
        on_result: ResultCallback,
        track: bool = True,
        detect_fps: float = 25.0,
        max_width: int = 3840,
        max_height: int = 2160,
    ) -> Lane: ...

    def inference_health(self) -> InferenceHealth: ...
