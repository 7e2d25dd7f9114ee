"""What the server's processes use: CPU time through psutil, the GPU through NVML (when there is one).

Feeds the capacity model (``streamsrv.runtime.capacity``): ``ProcessCpu`` follows one role's process (a camera's
decoder, the inference process) across restarts, so its CPU seconds only ever rise and a rate over them is cores.

Example:
    >>> cpu = ProcessCpu()
    >>> cpu.seconds(os.getpid()) >= 0
    True
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from types import ModuleType

import psutil

log = logging.getLogger(__name__)


def available_cores() -> float:
    """CPU cores this process may run on (its affinity, which containers and taskset narrow)."""
    try:
        return float(len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return float(os.cpu_count() or 1)


class ProcessCpu:
    """CPU seconds (user + system) of whatever process plays one role, summed over its incarnations."""

    def __init__(self) -> None:
        self._proc: psutil.Process | None = None
        self._done = 0.0  # seconds of earlier incarnations
        self._last = 0.0  # seconds of the current one, when last read

    def seconds(self, pid: int | None) -> float:
        """Total CPU seconds so far; ``pid`` is the role's process now (None between a death and its restart)."""
        if pid is None:
            return self._done + self._last
        if self._proc is None or self._proc.pid != pid:
            self._done += self._last
            self._last = 0.0
            try:
                self._proc = psutil.Process(pid)
            except psutil.Error:
                self._proc = None
                return self._done
        try:
            times = self._proc.cpu_times()
        except psutil.Error:  # it just exited: keep what it used
            return self._done + self._last
        self._last = times.user + times.system
        return self._done + self._last


@dataclass(frozen=True, slots=True)
class GpuReading:
    busy: float  # share of NVML's last sample period in which a kernel ran
    memory_used_bytes: float
    memory_total_bytes: float


class GpuProbe:
    """Reads one GPU through NVML; ``read`` gives None without an NVIDIA driver or GPU."""

    def __init__(self) -> None:
        self._nvml: ModuleType | None = None
        try:
            import pynvml  # nvidia-ml-py, installed with ultralytics

            pynvml.nvmlInit()
        except ImportError:
            return
        except pynvml.NVMLError as exc:
            log.debug("capacity: no GPU readings: NVML did not initialise (%s)", exc)
            return
        self._nvml = pynvml

    def read(self, device: str) -> GpuReading | None:
        """The GPU of an inference ``device`` such as ``cuda:1`` (None for a CPU device or without NVML)."""
        nvml = self._nvml
        if nvml is None or not device.startswith("cuda"):
            return None
        index = int(device.partition(":")[2] or 0)
        try:
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            rates = nvml.nvmlDeviceGetUtilizationRates(handle)
            memory = nvml.nvmlDeviceGetMemoryInfo(handle)
        except nvml.NVMLError:  # being reset, or gone from the bus
            return None
        return GpuReading(rates.gpu / 100.0, float(memory.used), float(memory.total))

    def close(self) -> None:
        if self._nvml is not None:
            self._nvml.nvmlShutdown()
            self._nvml = None
