"""The ONNX Runtime backend: the cached ONNX export on the CPU, or on CUDA when the build has it."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import numpy.typing as npt

from streamsrv.errors import ModelError
from streamsrv.infer.export import export_model

logger = logging.getLogger(__name__)


def cuda_index(device: str) -> int:
    """``cuda`` -> 0, ``cuda:1`` -> 1."""
    return int(device.partition(":")[2] or 0)


class OnnxBackend:
    """Runs the model's ONNX export in fp32 with ONNX Runtime.

    ``device`` ``cuda[:N]`` uses the CUDAExecutionProvider when this onnxruntime build has it and
    falls back to the CPU (with a warning) when it does not; ``name`` says which one runs.
    """

    def __init__(
        self,
        model_path: str,
        device: str = "cpu",
        threads: int = 0,
        precision: str = "auto",
        cache_dir: Path | None = None,
    ) -> None:
        if precision not in ("auto", "fp32"):
            raise ModelError(f"onnxruntime backend runs fp32 only, not {precision}; use openvino for bf16")
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise ModelError(
                "onnxruntime backend needs the onnxruntime package: pip install 'streamsrv[fast]'"
            ) from exc
        exported = export_model(model_path, "onnx", cache_dir)
        self.class_names = exported.class_names
        providers: list[str | tuple[str, dict[str, int]]] = ["CPUExecutionProvider"]
        self.device = "cpu"
        if device.startswith("cuda"):
            if "CUDAExecutionProvider" in ort.get_available_providers():
                providers.insert(0, ("CUDAExecutionProvider", {"device_id": cuda_index(device)}))
                self.device = device
            else:
                logger.warning("onnxruntime has no CUDAExecutionProvider (install onnxruntime-gpu); running on CPU")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or len(os.sched_getaffinity(0))
        # one model call at a time: inter-op threads would only compete with intra-op ones for cores
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Spinning intra-op threads collapse throughput when decoders share the cores (see streamsrv/infer/__init__)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self._session = ort.InferenceSession(str(exported.path), options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph exception types
            raise ModelError(f"onnxruntime cannot load {exported.path}: {exc}") from exc
        self._input = self._session.get_inputs()[0].name
        self.name = f"onnxruntime-{'cuda' if self.device != 'cpu' else 'cpu'}-fp32"
        logger.info("backend %s (providers %s)", self.name, self._session.get_providers())

    def forward(self, batch: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        outputs = self._session.run(None, {self._input: batch})
        result: npt.NDArray[np.float32] = np.asarray(outputs[0], dtype=np.float32)
        return result
