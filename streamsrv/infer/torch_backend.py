"""The ultralytics/torch backend: the model's ``nn.Module`` called directly on our own batch.

Calling the module rather than ``YOLO.predict`` keeps pre- and post-processing ours (shared with
every other backend) and avoids predict's per-call setup.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from streamsrv.errors import ModelError

if TYPE_CHECKING:
    import torch


def set_torch_threads(threads: int) -> int:
    """Use ``threads`` CPU threads (0: all cores); ultralytics quietly drops torch to one thread."""
    import torch

    n = threads or len(os.sched_getaffinity(0))
    torch.set_num_threads(n)
    return n


def channels_last_pays(device: str) -> bool:
    """NHWC weights: faster convolutions with cuDNN and with oneDNN on x86 CPUs (1.3x for YOLOv8s on this
    project's 2-core Xeon, as ultralytics' own predict does); inputs stay NCHW, torch converts them."""
    import platform

    import torch

    if device.startswith("cuda"):
        return True
    return platform.machine() in ("x86_64", "AMD64") and torch.backends.mkldnn.is_available()


def load_yolo(path: str) -> Any:
    """Load an ultralytics YOLO model, turning its many failure modes into one ModelError."""
    from ultralytics import YOLO

    try:
        return YOLO(path, task="detect")
    except Exception as exc:  # ultralytics raises FileNotFoundError, RuntimeError, pickle errors...
        raise ModelError(f"cannot load model {path!r}: {exc}") from exc


class ModuleBackend:
    """A network called as a torch module on ``device``: the .pt model itself, or ultralytics' runner of an
    exported engine. ``forward_tensor`` takes a batch already on the GPU (see ``gpu_preprocess``)."""

    def __init__(self, name: str, device: str, half: bool, class_names: dict[int, str], module: Any) -> None:
        import torch

        self.name = name
        self.device = device
        self.half = half
        self.class_names = class_names
        self.dtype = torch.float16 if half else torch.float32
        self._module = module
        self._torch = torch

    def forward(self, batch: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        return self.forward_tensor(self._torch.from_numpy(batch))

    def forward_tensor(self, batch: torch.Tensor) -> npt.NDArray[np.float32]:
        """``forward`` for a batch already in a tensor (on the GPU when preprocessing ran there)."""
        torch = self._torch
        with torch.inference_mode():
            x = batch.to(self.device, non_blocking=True)
            x = x.half() if self.half else x
            out = self._module(x)
            pred = out[0] if isinstance(out, (list, tuple)) else out
            result: npt.NDArray[np.float32] = pred.float().cpu().numpy()
        return result


class TorchBackend(ModuleBackend):
    """Runs a YOLO detection model with torch on CPU or CUDA (fp16 on CUDA by default)."""

    def __init__(self, model_path: str, device: str = "cpu", half: bool | None = None, threads: int = 0) -> None:
        import torch

        set_torch_threads(threads)
        yolo = load_yolo(model_path)
        half = device.startswith("cuda") if half is None else half
        if half and not device.startswith("cuda"):
            raise ModelError("half precision (fp16) needs a CUDA device")
        module = yolo.model.to(device).eval()
        module = module.fuse(verbose=False) if hasattr(module, "fuse") else module
        module = module.half() if half else module.float()
        if channels_last_pays(device):
            module = module.to(memory_format=torch.channels_last)
        class_names = {int(k): str(v) for k, v in yolo.names.items()}
        super().__init__(f"ultralytics-torch-{'fp16' if half else 'fp32'}", device, half, class_names, module)
