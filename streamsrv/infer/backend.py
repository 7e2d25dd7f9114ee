"""The detector backend protocol and the factory that picks one from config.

A backend runs the network only: it takes a letterboxed float batch and returns the raw YOLO
head output. Letterboxing, NMS and label mapping are shared (``streamsrv.infer.detector``), so
every backend produces comparable detections.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import numpy.typing as npt

from streamsrv.config.models import InferenceConfig, ModelConfig


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
    """Build the configured backend; raises ModelError when the model cannot be loaded."""
    from streamsrv.infer.torch_backend import TorchBackend

    return TorchBackend(model.path, device=resolve_device(inference.device), half=inference.half,
                        threads=inference.threads)
