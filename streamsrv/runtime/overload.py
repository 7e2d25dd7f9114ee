"""The overload governor: under overload, lower the effective detect_fps of low, then normal priority cameras, and
restore it step by step when load falls.

A camera is over its target when the p95 age of its frames (when inference took them) over the last
``degrade_after_s`` exceeds its ``max_frame_age_ms``; frames that never got there (overwritten by a newer one, or gone
stale) count as older than any target, so more than ``max_drop_share`` of them puts the p95 over. Overload, sustained
for ``degrade_after_s`` since the last step, takes one step down: every camera of the first priority class in
``DEGRADE_ORDER`` (low, then normal) that is above its floor has its effective fps multiplied by
``degrade_factor``. ``high`` cameras are never lowered, so the load they share falls and their frame age holds.
When every camera has stayed under ``restore_below`` of its target for ``restore_after_s`` since the last step, one
step goes back, in the reverse order (normal first, then low). A restore that the next overload undoes within that
hold doubles the hold (up to 8x), so load near the limit does not flap; it returns to ``restore_after_s`` after
a quiet spell with no step down.

Example:
    >>> gov = OverloadGovernor(CapacityConfig(degrade_after_s=1, restore_after_s=2))
    >>> slow = [CameraLoad("a", "low", 4.0, 100.0, processed=0, lost=0, ages_ms=(500.0,))]
    >>> gov.update(0.0, slow), gov.update(1.0, slow)
    ({'a': 4.0}, {'a': 2.0})
"""

from __future__ import annotations

import logging
import math
from collections import deque
from dataclasses import dataclass

import numpy as np

from streamsrv.config.capacity import DEGRADE_ORDER, CapacityConfig, Priority
from streamsrv.runtime.capacity import DegradeState

log = logging.getLogger(__name__)
_SAMPLES_KEPT = 8192  # frame ages kept per camera: 8x the longest hold at 25 fps is ~ 2000 a minute
_MAX_HOLD_FACTOR = 8


@dataclass(frozen=True, slots=True)
class CameraLoad:
    """One camera as the governor reads it at each update."""

    camera_id: str
    priority: Priority
    detect_fps: float  # configured
    target_ms: float  # p95 frame-age target
    processed: int  # frames inferred, since the camera started
    lost: int  # frames overwritten or gone stale before inference took them, since the camera started
    ages_ms: tuple[float, ...]  # ages of the frames inferred since the previous update


class _Window:
    """A camera's recent frame ages and counters, to judge any span of the last minutes."""

    def __init__(self) -> None:
        self.ages: deque[tuple[float, float]] = deque(maxlen=_SAMPLES_KEPT)
        self.counts: deque[tuple[float, int, int]] = deque()

    def add(self, now: float, load: CameraLoad, keep_s: float) -> None:
        self.ages.extend((now, age) for age in load.ages_ms)
        self.counts.append((now, load.processed, load.lost))
        while len(self.counts) > 2 and now - self.counts[1][0] >= keep_s:
            self.counts.popleft()

    def p95(self, since: float, max_drop_share: float) -> float:
        """p95 frame age since ``since``, in ms; infinite when too many frames were lost."""
        start = next(((p, lo) for t, p, lo in self.counts if t >= since), None)
        end = self.counts[-1] if self.counts else None
        if start is not None and end is not None:
            processed, lost = end[1] - start[0], end[2] - start[1]
            if lost > 0 and lost / (processed + lost) > max_drop_share:
                return float("inf")
        ages = [age for t, age in self.ages if t > since]
        return float(np.percentile(ages, 95)) if ages else 0.0


class OverloadGovernor:
    """Decides every camera's effective detect_fps from its recent frame ages; not thread-safe (one caller)."""

    def __init__(self, cfg: CapacityConfig) -> None:
        self.cfg = cfg
        self._levels: dict[str, int] = {}  # degrade steps each camera is down
        self._windows: dict[str, _Window] = {}
        self._loads: dict[str, CameraLoad] = {}
        self._started: float | None = None
        self._last_step = 0.0
        self._last_down = float("-inf")
        self._last_up = float("-inf")
        self._hold = cfg.restore_after_s
        self._state = DegradeState(enabled=cfg.degrade, restore_after_s=cfg.restore_after_s)

    def update(self, now: float, loads: list[CameraLoad]) -> dict[str, float]:
        """Take this round's readings; the effective detect_fps of every camera in ``loads``."""
        if self._started is None:
            self._started = self._last_step = now
        cfg = self.cfg
        keep_s = _MAX_HOLD_FACTOR * cfg.restore_after_s + cfg.degrade_after_s
        self._loads = {load.camera_id: load for load in loads}
        for gone in set(self._windows) - set(self._loads):
            self._windows.pop(gone)
            self._levels.pop(gone, None)
        for load in loads:
            self._windows.setdefault(load.camera_id, _Window()).add(now, load, keep_s)
            self._levels.setdefault(load.camera_id, 0)
        p95 = {c.camera_id: self._p95(c, now - cfg.degrade_after_s) for c in loads}
        over = [c for c in loads if p95[c.camera_id] > c.target_ms]
        if cfg.degrade:
            self._step(now, over, p95)
        self._state = DegradeState(
            enabled=cfg.degrade,
            overloaded=bool(over),
            degraded=sorted(cid for cid, level in self._levels.items() if level > 0),
            steps_down=self._state.steps_down,
            steps_up=self._state.steps_up,
            restore_after_s=self._hold,
            frame_age_ms_p95={cid: round(v, 1) if math.isfinite(v) else None for cid, v in p95.items()},
        )
        return {load.camera_id: self.effective_fps(load.camera_id) for load in loads}

    def effective_fps(self, camera_id: str) -> float:
        """The camera's detect_fps after the steps it is down (its configured one when not degraded)."""
        load = self._loads[camera_id]
        level = self._levels.get(camera_id, 0)
        if level == 0:
            return load.detect_fps
        return max(self._floor(load), load.detect_fps * self.cfg.degrade_factor**level)

    def state(self) -> DegradeState:
        return self._state.model_copy()

    # -- internals -------------------------------------------------------------------------------------------------
    def _p95(self, load: CameraLoad, since: float) -> float:
        return self._windows[load.camera_id].p95(since, self.cfg.max_drop_share)

    def _floor(self, load: CameraLoad) -> float:
        return min(load.detect_fps, self.cfg.min_detect_fps)

    def _step(self, now: float, over: list[CameraLoad], p95: dict[str, float]) -> None:
        cfg = self.cfg
        overloaded = bool(over)
        if now - self._last_down > _MAX_HOLD_FACTOR * self._hold:
            self._hold = cfg.restore_after_s  # quiet for long enough: forgive earlier flapping
        if overloaded and now - self._last_step >= cfg.degrade_after_s:
            if lowered := self._down():
                worst = max(over, key=lambda c: p95[c.camera_id] / c.target_ms)
                log.warning(
                    "overload: camera %s frame age p95 %s over its %.0f ms target; lowering %s to %s",
                    worst.camera_id,
                    f"{p95[worst.camera_id]:.0f} ms" if math.isfinite(p95[worst.camera_id]) else "(frames lost)",
                    worst.target_ms,
                    ", ".join(lowered),
                    ", ".join(f"{self.effective_fps(c):g}" for c in lowered),
                )
                if now - self._last_up < self._hold:  # the last restore was too soon
                    self._hold = min(self._hold * 2, _MAX_HOLD_FACTOR * cfg.restore_after_s)
                self._last_step = self._last_down = now
                self._state.steps_down += 1
            return
        if overloaded or now - self._last_step < self._hold:
            return
        since = now - self._hold
        calm = all(self._p95(c, since) < cfg.restore_below * c.target_ms for c in self._loads.values())
        if calm and (raised := self._up()):
            self._last_step = self._last_up = now
            self._state.steps_up += 1
            log.info(
                "load fell: restoring %s to %s fps",
                ", ".join(raised),
                ", ".join(f"{self.effective_fps(c):g}" for c in raised),
            )

    def _down(self) -> list[str]:
        """Lower the first class that can still go lower; the cameras lowered (none when none can go lower)."""
        for priority in DEGRADE_ORDER:
            lowerable = [
                c
                for c in self._loads.values()
                if c.priority == priority and self.effective_fps(c.camera_id) > self._floor(c)
            ]
            if lowerable:
                for c in lowerable:
                    self._levels[c.camera_id] += 1
                return [c.camera_id for c in lowerable]
        return []

    def _up(self) -> list[str]:
        """Raise the class lowered last (normal before low) one step; the cameras raised."""
        for priority in reversed(DEGRADE_ORDER):
            raised = [c for c in self._loads.values() if c.priority == priority and self._levels[c.camera_id] > 0]
            if raised:
                for c in raised:
                    self._levels[c.camera_id] -= 1
                return [c.camera_id for c in raised]
        return []
