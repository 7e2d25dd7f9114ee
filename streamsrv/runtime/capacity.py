"""The live capacity model: what each camera costs now, the headroom left, and how many more cameras fit.

The server measures (``Usage``, from ``StreamServer.capacity_usage``): each camera's share of the inference loop
(its frames' share of their batches' time, times its processed fps), its decoder's CPU, its preview's drawing and
encoding, the inference and main processes' CPU, and, with a GPU, NVML's busy fraction and memory. This module is
the arithmetic on those numbers, kept free of processes so it can be tested on its own.

Resources and their budgets (``capacity`` config): ``inference`` (share of the inference loop's time,
``max_inference_busy``), ``cpu`` (cores of streamsrv's processes, ``cpu_cores``), and with a GPU ``gpu``
(``max_gpu_busy``) and ``gpu_memory`` (``max_gpu_memory`` of the memory). A camera's CPU is its decoder and preview
plus its share of the inference process's CPU (by its share of the loop) and an even share of the main process's
other work. Its GPU time is its share of the loop times the GPU's busy fraction; its GPU memory is counted as none
(batches share one model), so that resource binds only once it is full.

Example:
    >>> usage = Usage(cameras=[CameraUsage(camera_id="a", detect_fps=5, effective_detect_fps=5, processed_fps=5,
    ...     inference_ms_per_frame=40, decoder_cores=0.05)], inference_cores=0.4, main_cores=0.05, cpu_cores=4)
    >>> report = capacity_report(CapacityConfig(), usage, like="a")
    >>> report.like.fits, report.like.binding
    (3, 'inference')
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, Field

from streamsrv.config.capacity import CapacityConfig, Priority
from streamsrv.config.models import CameraConfig
from streamsrv.errors import ConflictError

Resource = Literal["inference", "cpu", "gpu", "gpu_memory"]
UNITS: dict[Resource, str] = {
    "inference": "share of the inference loop's time",
    "cpu": "CPU cores",
    "gpu": "share of the GPU's time",
    "gpu_memory": "bytes",
}


class CameraUsage(BaseModel):
    """What one running camera costs now."""

    camera_id: str
    priority: Priority = "normal"
    detect_fps: float = Field(description="Configured detect_fps.")
    effective_detect_fps: float = Field(description="What its decoder paces to now (lower while degraded).")
    processed_fps: float = Field(description="Frames inferred per second (over the last 5 s).")
    inference_ms_per_frame: float = Field(description="Its frames' share of their batches' inference time, mean.")
    decoder_cores: float = Field(description="CPU cores its decoder process uses.")
    preview_cores: float = Field(0.0, description="CPU cores its preview's drawing and encoding use (0 unwatched).")

    @property
    def inference_busy(self) -> float:
        """Share of the inference loop's time this camera takes."""
        return self.inference_ms_per_frame * self.processed_fps / 1e3


class DegradeState(BaseModel):
    """The overload governor's state (see ``streamsrv.runtime.overload``)."""

    enabled: bool = True
    overloaded: bool = Field(False, description="Some camera's frame age p95 is over its target now.")
    degraded: list[str] = Field(default_factory=list, description="Cameras whose effective detect_fps is lowered.")
    frame_age_ms_p95: dict[str, float | None] = Field(
        default_factory=dict,
        description="Each camera's frame age p95 over the last degrade_after_s, as the governor judges it; null when "
        "more than max_drop_share of its frames were lost (older than any target).",
    )
    steps_down: int = Field(0, description="Degrade steps taken since the server started.")
    steps_up: int = Field(0, description="Restore steps taken since the server started.")
    restore_after_s: float = Field(0.0, description="How long load must stay low before the next restore step.")


class Usage(BaseModel):
    """The server's measurements, the capacity model's input."""

    cameras: list[CameraUsage] = Field(default_factory=list)
    inference_cores: float = Field(0.0, description="CPU cores the inference process uses.")
    main_cores: float = Field(0.0, description="CPU cores the main process uses (API, rules, previews).")
    cpu_cores: float = Field(description="CPU cores this server may run on.")
    gpu_busy: float | None = Field(None, description="NVML: share of time the inference GPU ran a kernel.")
    gpu_memory_used_bytes: float | None = None
    gpu_memory_total_bytes: float | None = None
    degrade: DegradeState = Field(default_factory=DegradeState)


class ResourceHeadroom(BaseModel):
    resource: Resource
    unit: str
    budget: float
    used: float
    headroom: float = Field(description="budget - used; negative when over budget.")


class CameraFit(BaseModel):
    """How many more cameras like this one fit, and which resource runs out first."""

    camera_id: str
    usage: CameraUsage = Field(description="What it was measured to use, its rates and priority.")
    cost: dict[str, float] = Field(description="What the camera costs per resource now.")
    fits: int | None = Field(description="Cameras like it that still fit; null when none of its costs is measured.")
    binding: Resource | None = Field(description="The resource that runs out first.")
    fits_by_resource: dict[str, int | None]


class CapacityReport(BaseModel):
    """``GET /api/capacity``."""

    measured: bool = Field(description="Some camera has been inferred, so costs are known.")
    resources: list[ResourceHeadroom]
    cameras: list[CameraFit]
    like: CameraFit | None = Field(None, description="The camera asked about with ?like=.")
    degrade: DegradeState


class Shortfall(BaseModel):
    """Why a camera or a detect_fps raise was refused: the binding resource and by how much."""

    resource: Resource
    unit: str
    needed: float = Field(description="What the change would add.")
    headroom: float = Field(description="What is left of the budget now.")
    short_by: float = Field(description="needed - headroom.")
    message: str


class CapacityRefused(ConflictError):
    """A camera or a detect_fps raise that the measured headroom cannot carry (the API answers 409)."""

    def __init__(self, shortfall: Shortfall) -> None:
        super().__init__(shortfall.message)
        self.shortfall = shortfall


def admission_shortfall(
    cfg: CapacityConfig, usage: Usage, cam: CameraConfig, old: CameraConfig | None = None
) -> Shortfall | None:
    """Why ``cam`` (new, or replacing ``old``) must be refused, or None when it fits (or admission is off).

    A camera that will run and did not is costed as a new one; a running one whose ``detect_fps`` rises, by its extra
    frames. Before any camera has been inferred nothing is known, and everything is admitted.
    """
    if not cfg.admission or not cam.enabled:
        return None
    if old is None or not old.enabled:
        cost = new_camera_cost(usage, cam.detect_fps)
        what = f"camera {cam.id!r} at {cam.detect_fps:g} fps"
    elif cam.detect_fps > old.detect_fps:
        cost = fps_raise_cost(usage, cam.id, old.detect_fps, cam.detect_fps)
        what = f"raising the detect_fps of camera {cam.id!r} from {old.detect_fps:g} to {cam.detect_fps:g}"
    else:
        return None
    return shortfall(resources(cfg, usage), cost, what)


def resources(cfg: CapacityConfig, usage: Usage) -> dict[Resource, ResourceHeadroom]:
    """Budget, use and headroom of each resource this server has (the GPU ones only with a GPU)."""
    busy = sum(c.inference_busy for c in usage.cameras)
    cpu = usage.inference_cores + usage.main_cores + sum(c.decoder_cores for c in usage.cameras)
    table: dict[Resource, tuple[float, float]] = {
        "inference": (cfg.max_inference_busy, busy),
        "cpu": (cfg.cpu_cores if cfg.cpu_cores is not None else usage.cpu_cores, cpu),
    }
    if usage.gpu_busy is not None:
        table["gpu"] = (cfg.max_gpu_busy, usage.gpu_busy)
    if usage.gpu_memory_used_bytes is not None and usage.gpu_memory_total_bytes:
        table["gpu_memory"] = (cfg.max_gpu_memory * usage.gpu_memory_total_bytes, usage.gpu_memory_used_bytes)
    return {
        name: ResourceHeadroom(resource=name, unit=UNITS[name], budget=budget, used=used, headroom=budget - used)
        for name, (budget, used) in table.items()
    }


def camera_costs(usage: Usage) -> dict[str, dict[Resource, float]]:
    """What each camera costs now, per resource."""
    cams = usage.cameras
    total_busy = sum(c.inference_busy for c in cams)
    preview = sum(c.preview_cores for c in cams)
    main_each = max(0.0, usage.main_cores - preview) / len(cams) if cams else 0.0
    out: dict[str, dict[Resource, float]] = {}
    for c in cams:
        share = c.inference_busy / total_busy if total_busy > 0 else 0.0
        cost: dict[Resource, float] = {
            "inference": c.inference_busy,
            "cpu": c.decoder_cores + c.preview_cores + main_each + usage.inference_cores * share,
        }
        if usage.gpu_busy is not None:
            cost["gpu"] = usage.gpu_busy * share
        if usage.gpu_memory_used_bytes is not None:
            cost["gpu_memory"] = 0.0
        out[c.camera_id] = cost
    return out


def measured(usage: Usage) -> bool:
    """Some camera's frames have been inferred, so a frame's cost is known."""
    return any(c.processed_fps > 0 and c.inference_ms_per_frame > 0 for c in usage.cameras)


def frame_cost(usage: Usage, camera_id: str | None = None) -> dict[Resource, float]:
    """What one more frame per second costs: of ``camera_id`` if it has been measured, else the cameras' mean."""
    cams = [c for c in usage.cameras if c.processed_fps > 0 and c.inference_ms_per_frame > 0]
    own = [c for c in cams if c.camera_id == camera_id]
    fps = sum(c.processed_fps for c in cams)
    busy = sum(c.inference_busy for c in cams)
    if not cams or busy <= 0:
        return {}
    ms = own[0].inference_ms_per_frame if own else busy * 1e3 / fps
    per_busy = ms / 1e3 / busy  # this frame's share of all the loop's work, per unit of busy
    cost: dict[Resource, float] = {"inference": ms / 1e3, "cpu": usage.inference_cores * per_busy}
    if usage.gpu_busy is not None:
        cost["gpu"] = usage.gpu_busy * per_busy
    if usage.gpu_memory_used_bytes is not None:
        cost["gpu_memory"] = 0.0
    return cost


def new_camera_cost(usage: Usage, detect_fps: float) -> dict[Resource, float]:
    """What a camera not yet running would cost at ``detect_fps``: the mean frame cost at its full rate (motion
    gating may save some, a busy scene none), plus the mean decoder and main-process share of the cameras running."""
    per_frame = frame_cost(usage)
    if not per_frame:
        return {}
    cams = usage.cameras
    preview = sum(c.preview_cores for c in cams)
    main_each = max(0.0, usage.main_cores - preview) / len(cams)
    cost = {name: value * detect_fps for name, value in per_frame.items()}
    cost["cpu"] += sum(c.decoder_cores for c in cams) / len(cams) + main_each  # a new camera is not watched yet
    return cost


def fps_raise_cost(usage: Usage, camera_id: str, old_fps: float, new_fps: float) -> dict[Resource, float]:
    """What raising a running camera's detect_fps adds: its own frame cost (or the mean) per extra frame."""
    per_frame = frame_cost(usage, camera_id)
    return {name: value * max(0.0, new_fps - old_fps) for name, value in per_frame.items()}


def fits(headroom: dict[Resource, ResourceHeadroom], cost: dict[Resource, float]) -> tuple[int | None, Resource | None]:
    """How many cameras costing ``cost`` fit in ``headroom``, and the resource that runs out first.

    >>> room = {"inference": ResourceHeadroom(resource="inference", unit="", budget=0.9, used=0.2, headroom=0.7)}
    >>> fits(room, {"inference": 0.2})
    (3, 'inference')
    """
    counts = _fits_by_resource(headroom, cost)
    bounded = [(n, name) for name, n in counts.items() if n is not None]
    if not bounded:
        return None, None
    n, name = min(bounded)
    return n, name


def shortfall(headroom: dict[Resource, ResourceHeadroom], cost: dict[Resource, float], what: str) -> Shortfall | None:
    """None when ``cost`` fits in ``headroom``; otherwise the resource short by the most (relative to its budget).

    >>> room = {"cpu": ResourceHeadroom(resource="cpu", unit="CPU cores", budget=2, used=1.9, headroom=0.1)}
    >>> shortfall(room, {"cpu": 0.3}, "camera 'x'").short_by
    0.2
    """
    worst: tuple[float, Resource] | None = None
    for name, needed in cost.items():
        room = headroom.get(name)
        if room is None or needed <= 0 or needed <= room.headroom:
            continue
        relative = (needed - room.headroom) / room.budget
        if worst is None or relative > worst[0]:
            worst = (relative, name)
    if worst is None:
        return None
    name = worst[1]
    room, needed = headroom[name], cost[name]
    short = round(needed - room.headroom, 6)
    return Shortfall(
        resource=name,
        unit=room.unit,
        needed=round(needed, 6),
        headroom=round(room.headroom, 6),
        short_by=short,
        message=f"not enough {name} capacity for {what}: it needs {needed:.3g} ({room.unit}) and {room.headroom:.3g} "
        f"of the budget {room.budget:.3g} is left (short by {short:.3g}); add ?force=true to do it anyway",
    )


def capacity_report(cfg: CapacityConfig, usage: Usage, like: str | None = None) -> CapacityReport:
    """Headroom per resource, and for each camera how many more like it fit (``like``: the one asked about).

    Raises KeyError when ``like`` is not a running camera.
    """
    headroom = resources(cfg, usage)
    costs = camera_costs(usage)
    cameras = [_fit(cam, costs[cam.camera_id], headroom) for cam in usage.cameras]
    chosen = None
    if like is not None:
        chosen = next((fit for fit in cameras if fit.camera_id == like), None)
        if chosen is None:
            raise KeyError(like)
    return CapacityReport(
        measured=measured(usage), resources=list(headroom.values()), cameras=cameras, like=chosen, degrade=usage.degrade
    )


def _fit(cam: CameraUsage, cost: dict[Resource, float], headroom: dict[Resource, ResourceHeadroom]) -> CameraFit:
    n, binding = fits(headroom, cost)
    return CameraFit(
        camera_id=cam.camera_id,
        usage=cam,
        cost={name: round(value, 6) for name, value in cost.items()},
        fits=n,
        binding=binding,
        fits_by_resource={name: value for name, value in _fits_by_resource(headroom, cost).items()},
    )


def _fits_by_resource(
    headroom: dict[Resource, ResourceHeadroom], cost: dict[Resource, float]
) -> dict[Resource, int | None]:
    out: dict[Resource, int | None] = {}
    for name, room in headroom.items():
        need = cost.get(name, 0.0)
        if room.headroom <= 0:
            out[name] = 0
        elif need <= 0:
            out[name] = None  # costs nothing measurable: not a limit
        else:
            out[name] = math.floor(room.headroom / need + 1e-9)
    return out
