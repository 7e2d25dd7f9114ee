"""The detector backend protocol and the factory that picks one from config.

A backend runs the network only: it takes a letterboxed float batch and returns the raw YOLO
head output. Letterboxing, NMS and label mapping are shared (``streamsrv.infer.detector``), so
every backend produces comparable detections.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt

from streamsrv.config.models import InferenceConfig, ModelConfig
from streamsrv.errors import ModelError

TORCH_HALF: dict[str, bool | None] = {"auto": None, "fp32": False, "fp16": True}


class Backend(Protocol):
    """Runs a YOLO detection network.

    ``forward`` takes ``(B, 3, H, W)`` float32 RGB in [0, 1] (H, W multiples of 32) and returns
    ``(B, 4 + num_classes, num_anchors)``: centre-x, centre-y, width, height in network pixels,
    then per-class scores.
    """

    name: str
    device: str
    class_names: dict[int, str]

    def forward(self, batch: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]: ...


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda:0`` when CUDA is usable, else ``cpu``."""
    if device != "auto":
        return device
    import torch

    return "cuda:0" if torch.cuda.is_available() else "cpu"


def create_backend(model: ModelConfig, inference: InferenceConfig) -> Backend:
    """Build the configured backend; raises ModelError when it cannot run here or the model cannot be loaded.

    onnxruntime, openvino and tensorrt export the model on first use, cached in ``$STREAMSRV_CACHE``
    (default ``~/.cache/streamsrv/exports``).
    """
    if inference.device.startswith("intel-gpu") and inference.backend != "openvino":
        raise ModelError(f"device {inference.device} needs backend openvino, not {inference.backend}")
    # Each backend is imported only when chosen: their runtimes (openvino, onnxruntime, tensorrt, torch) are large,
    # optional, and must not be loaded by processes that do not run the model.
    if inference.backend == "openvino":
        from streamsrv.infer.openvino_backend import OpenVinoBackend
        from streamsrv.infer.quantize import Calibration

        calibration = (
            Calibration(Path(inference.calibration), inference.calibration_frames, inference.imgsz)
            if inference.calibration and inference.precision == "int8"
            else None
        )
        # OpenVINO has its own device names, and auto means CPU even when CUDA is present
        return OpenVinoBackend(
            model.path, inference.device, inference.threads, inference.precision, calibration=calibration
        )
    device = resolve_device(inference.device)
    if inference.backend == "onnxruntime":
        from streamsrv.infer.onnx_backend import OnnxBackend

        return OnnxBackend(model.path, device, inference.threads, inference.precision)
    if inference.backend == "tensorrt":
        from streamsrv.infer.tensorrt_backend import TensorRtBackend

        if inference.precision == "bf16":
            raise ModelError("the tensorrt backend runs fp16 or fp32, not bf16")
        half = inference.precision != "fp32"  # auto means fp16 on TensorRT
        return TensorRtBackend(model.path, device, half, inference.max_batch, inference.imgsz)
    if inference.precision == "bf16":
        raise ModelError("the ultralytics backend has no bf16; use backend openvino for bf16 on CPUs")
    from streamsrv.infer.torch_backend import TorchBackend

    return TorchBackend(model.path, device=device, half=TORCH_HALF[inference.precision], threads=inference.threads)
