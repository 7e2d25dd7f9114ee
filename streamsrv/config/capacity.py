"""Capacity: the budgets cameras are admitted against, and how the server degrades under overload.

The server measures what each camera costs (``streamsrv.runtime.capacity``). A camera added through the API, or a
``detect_fps`` raised, that the budgets below cannot carry is refused with 409 (``?force=true`` overrides). When a
camera's frame age p95 goes over its ``max_frame_age_ms`` the server lowers the effective ``detect_fps`` of ``low``
cameras first, then ``normal`` ones, never ``high`` ones, and raises it back step by step when load falls.

Example:
    >>> CapacityConfig.model_validate({"max_inference_busy": 0.5}).degrade_factor
    0.5
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from streamsrv.config.base import StrictModel

Priority = Literal["high", "normal", "low"]
# The order cameras give up detection frames under overload: first low, then normal; high never.
DEGRADE_ORDER: tuple[Priority, ...] = ("low", "normal")


class CapacityConfig(StrictModel):
    """Budgets for admission control, and the overload governor's steps."""

    admission: bool = Field(
        True,
        description="Refuse (409) a camera added through the API, or a detect_fps raise, that the measured headroom "
        "cannot carry; ?force=true overrides. Cameras in this file are always started.",
    )
    max_inference_busy: float = Field(
        0.9,
        gt=0,
        le=1,
        description="Share of the inference loop's time that cameras may fill (the rest absorbs bursts, uploaded "
        "images and jobs).",
    )
    cpu_cores: float | None = Field(
        None,
        gt=0,
        le=4096,
        description="CPU cores streamsrv's processes (main, inference, decoders) may use; all cores this process "
        "may run on when unset.",
    )
    max_gpu_busy: float = Field(
        0.9, gt=0, le=1, description="Share of time the inference GPU may be busy (NVML's utilisation), with a GPU."
    )
    max_gpu_memory: float = Field(
        0.9, gt=0, le=1, description="Share of the inference GPU's memory that may be in use, with a GPU."
    )
    degrade: bool = Field(
        True,
        description="Under overload, lower the effective detect_fps of low, then normal priority cameras, and "
        "restore it when load falls.",
    )
    degrade_factor: float = Field(
        0.5, gt=0, lt=1, description="Each degrade step multiplies the effective detect_fps by this."
    )
    min_detect_fps: float = Field(
        0.5,
        gt=0,
        le=120,
        description="A degraded camera keeps at least this detect_fps (or its configured one, if lower).",
    )
    degrade_after_s: float = Field(
        3.0,
        gt=0,
        le=600,
        description="A camera over its frame-age target this long (measured since the last step) makes one "
        "degrade step.",
    )
    restore_after_s: float = Field(
        10.0,
        gt=0,
        le=3600,
        description="Every camera under restore_below of its target this long (since the last step) makes one "
        "restore step; doubled after a restore that had to be undone, so load near the limit does not flap.",
    )
    restore_below: float = Field(
        0.5,
        gt=0,
        lt=1,
        description="Restore only while every camera's frame age p95 is under this share of its target.",
    )
    max_drop_share: float = Field(
        0.05,
        ge=0,
        lt=1,
        description="Frames overwritten or gone stale before inference took them count as too old: more than this "
        "share of a camera's handed frames puts its frame age p95 over any target.",
    )

    @model_validator(mode="after")
    def _check_windows(self) -> CapacityConfig:
        if self.restore_after_s < self.degrade_after_s:
            raise ValueError(
                f"restore_after_s ({self.restore_after_s}) must not be shorter than degrade_after_s "
                f"({self.degrade_after_s}): restoring faster than degrading flaps"
            )
        return self
