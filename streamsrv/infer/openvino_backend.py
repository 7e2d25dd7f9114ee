"""The OpenVINO backend: the cached IR export on the CPU or an Intel GPU, in fp32, bf16, fp16 or int8.

On CPUs with AVX512-BF16/AMX, bf16 roughly doubles throughput over fp32, so ``auto`` picks it there
(as OpenVINO itself does by default). It is close to fp32, not equal: on the sample clip ~97% of
boxes match torch fp32 at IoU >= 0.9; the rest are low-confidence boxes that move a few pixels or
drop out when a score change makes NMS keep a neighbouring anchor. Ask for fp32 where that matters.

int8 runs an INT8 copy of the IR calibrated on the operator's frames (``streamsrv.infer.quantize``); it is
never chosen by ``auto``, since it needs those frames and is further from fp32 than bf16.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import numpy as np
import numpy.typing as npt

from streamsrv.errors import ModelError
from streamsrv.infer.export import export_model
from streamsrv.infer.quantize import Calibration

logger = logging.getLogger(__name__)

# an INT8 IR keeps some layers (the head) in floating point: they run in f32
OV_PRECISIONS = {"fp32": "f32", "bf16": "bf16", "fp16": "f16", "int8": "f32"}


def openvino_device(device: str) -> str:
    """Our device name -> OpenVINO's: ``auto``/``cpu`` -> ``CPU``, ``intel-gpu[:N]`` -> ``GPU[.N]``."""
    if device in ("auto", "cpu"):
        return "CPU"
    match = re.fullmatch(r"intel-gpu(?::(\d+))?", device)
    if match is None:
        raise ModelError(f"openvino backend runs on cpu or intel-gpu[:N], not {device!r}")
    return "GPU" if match[1] is None else f"GPU.{match[1]}"


def choose_precision(capabilities: list[str], ov_device: str, requested: str) -> str:
    """The precision to run: ``requested`` when the device supports it, else fp32.

    ``auto`` is bf16 on CPUs that have it and fp16 on GPUs.

    >>> choose_precision(["FP32", "BF16"], "CPU", "auto"), choose_precision(["FP32"], "CPU", "bf16")
    ('bf16', 'fp32')
    """
    wanted = ("bf16" if ov_device == "CPU" else "fp16") if requested == "auto" else requested
    if wanted == "fp32" or wanted.upper() in capabilities:
        return wanted
    if requested != "auto":
        logger.warning("%s has no %s support (it has %s); running fp32", ov_device, wanted, capabilities)
    return "fp32"


class OpenVinoBackend:
    """Runs the model's OpenVINO IR export; ``name`` (e.g. ``openvino-cpu-bf16``) says what was chosen."""

    def __init__(
        self,
        model_path: str,
        device: str = "cpu",
        threads: int = 0,
        precision: str = "auto",
        cache_dir: Path | None = None,
        calibration: Calibration | None = None,
    ) -> None:
        try:
            import openvino as ov
        except ImportError as exc:
            raise ModelError("openvino backend needs the openvino package: pip install 'streamsrv[fast]'") from exc
        ov_device = openvino_device(device)
        core = ov.Core()
        if ov_device.split(".")[0] not in {d.split(".")[0] for d in core.available_devices}:
            raise ModelError(f"OpenVINO device {ov_device} is not available here (found {core.available_devices})")
        if (precision == "int8") != (calibration is not None):
            raise ModelError("openvino precision int8 needs calibration frames, and only int8 uses them")
        self.precision = choose_precision(
            list(core.get_property(ov_device, "OPTIMIZATION_CAPABILITIES")), ov_device, precision
        )
        # a device without INT8 falls back to the fp32 IR, not to a dequantized INT8 one
        int8 = calibration if self.precision == "int8" else None
        exported = export_model(model_path, "openvino", cache_dir, calibration=int8)
        self.class_names = exported.class_names
        config: dict[str, object] = {
            "INFERENCE_PRECISION_HINT": OV_PRECISIONS[self.precision],
            # one synchronous request per batch: LATENCY gives it all cores instead of splitting into streams
            "PERFORMANCE_HINT": "LATENCY",
        }
        if ov_device == "CPU":
            config["INFERENCE_NUM_THREADS"] = threads or len(os.sched_getaffinity(0))
        try:
            compiled = core.compile_model(str(exported.path), ov_device, config)
        except Exception as exc:  # openvino raises plain RuntimeError with the plugin's message
            raise ModelError(f"OpenVINO cannot compile {exported.path} for {ov_device}: {exc}") from exc
        self._request = compiled.create_infer_request()
        self.device = ov_device.lower()
        self.name = f"openvino-{self.device}-{self.precision}"
        logger.info("backend %s (requested precision %s)", self.name, precision)

    def forward(self, batch: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        self._request.infer({0: batch})
        # the request reuses its output buffer on the next call
        result: npt.NDArray[np.float32] = self._request.get_output_tensor(0).data.copy()
        return result
