"""The TensorRT backend: an engine built by ultralytics' exporter (fp16, dynamic batch), cached per GPU.

The engine is built from the ``.pt`` weights on first use (minutes: the builder times every layer; the log shows
its steps) and cached under the weights' hash, the GPU, the TensorRT version, the precision and the batch and input
limits (``export.EngineSpec``). It runs through ultralytics' own TensorRT runner on our letterboxed batch, which is
prepared on the GPU exactly as for the torch backend (``gpu_preprocess``), so NMS and boxes are shared.

Example:
    >>> backend = TensorRtBackend("person_yolov8s.pt", "cuda:0", half=True, max_batch=8, imgsz=640)  # doctest: +SKIP
    >>> backend.name  # doctest: +SKIP
    'tensorrt-cuda-fp16'
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from streamsrv.errors import ModelError
from streamsrv.infer.export import EngineSpec, export_model
from streamsrv.infer.torch_backend import ModuleBackend


def tensorrt_unavailable(device: str) -> str | None:
    """Why a TensorRT engine cannot run on ``device`` here, or None when it can."""
    import torch

    missing = [
        what
        for what, present in (
            ("a CUDA device", device.startswith("cuda") and torch.cuda.is_available()),
            ("the tensorrt package", importlib.util.find_spec("tensorrt") is not None),
        )
        if not present
    ]
    if not missing:
        return None
    return (
        f"tensorrt backend needs a CUDA device and the tensorrt package (missing here: {', '.join(missing)}); "
        "use backend openvino on CPUs, ultralytics (fp16) on CUDA"
    )


class TensorRtBackend(ModuleBackend):
    """Runs a cached TensorRT engine of a YOLO model through ultralytics' TensorRT runner."""

    def __init__(
        self,
        model_path: str,
        device: str,
        half: bool = True,
        max_batch: int = 8,
        imgsz: int = 640,
        cache_dir: Path | None = None,
    ) -> None:
        reason = tensorrt_unavailable(device)
        if reason:
            raise ModelError(reason)
        import tensorrt
        import torch
        from ultralytics.nn.autobackend import AutoBackend

        spec = EngineSpec(
            device=device,
            half=half,
            max_batch=max_batch,
            imgsz=imgsz,
            gpu=torch.cuda.get_device_name(torch.device(device)),
            tensorrt_version=tensorrt.__version__,
        )
        exported = export_model(model_path, "tensorrt", cache_dir, engine=spec)
        try:
            runner = AutoBackend(str(exported.path), device=torch.device(device), fp16=half, verbose=False)
        except Exception as exc:  # a corrupt engine, or one from another TensorRT build
            raise ModelError(f"cannot load TensorRT engine {exported.path}: {exc}") from exc
        super().__init__(f"tensorrt-cuda-{spec.precision}", device, half, exported.class_names, runner)
