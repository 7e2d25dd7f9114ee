"""Published figures used to project capacity onto GPUs we did not measure (``streams_per_gpu --plan``).

Nothing here is measured by streamsrv; every figure names its public source, and ``streams_per_gpu``
prints those sources next to each projection. Where a figure is not published (NVIDIA publishes no
datasheet for the AWS-only A10G) the ratio used and its basis are stated instead of a number invented.

    >>> GPUS["a10g"].relative_to_t4
    1.875
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Source:
    title: str
    url: str


@dataclass(frozen=True, slots=True)
class GpuReference:
    """A GPU and the cloud host it usually comes in, with the figures a projection uses."""

    key: str
    name: str
    device_names: tuple[str, ...]  # substrings of the NVML/CUDA device name that mean this GPU
    memory_gb: int
    memory_bandwidth_gbs: float
    fp16_tensor_tflops: float | None  # dense; None where the vendor publishes none
    relative_to_t4: float  # inference throughput relative to a T4, the basis stated below
    relative_basis: str
    host: str
    host_vcpus: int
    sources: tuple[Source, ...]


T4_DATASHEET = Source(
    "NVIDIA T4 Tensor Core GPU datasheet (FP16 mixed precision 65 TFLOPS, 16 GB GDDR6, 320 GB/s)",
    "https://www.nvidia.com/content/dam/en-zz/Solutions/Data-Center/tesla-t4/t4-tensor-core-datasheet-951643.pdf",
)
A10_DATASHEET = Source(
    "NVIDIA A10 Tensor Core GPU datasheet (FP16 tensor 125 TFLOPS dense, 24 GB GDDR6, 600 GB/s)",
    "https://www.nvidia.com/content/dam/en-zz/Solutions/Data-Center/a10/pdf/a10-datasheet.pdf",
)
A10G_VS_A10 = Source(
    "Baseten, 'NVIDIA A10 vs A10G for ML model inference' (A10G: same 24 GB and 600 GB/s as the A10, "
    "less tensor compute; most inference is memory bound)",
    "https://www.baseten.co/blog/nvidia-a10-vs-a10g-for-ml-model-inference/",
)
AWS_G4 = Source(
    "AWS EC2 G4 instances (g4dn.xlarge: 1 T4, 4 vCPUs, 16 GiB)", "https://aws.amazon.com/ec2/instance-types/g4/"
)
AWS_G5 = Source(
    "AWS EC2 G5 instances (g5.xlarge: 1 A10G, 4 vCPUs, 16 GiB)", "https://aws.amazon.com/ec2/instance-types/g5/"
)
YOLOV8_T4_LATENCY = Source(
    "Ultralytics docs, YOLO11 vs YOLOv8 comparison table: YOLOv8 'Speed T4 TensorRT10 (ms)' at 640 px",
    "https://docs.ultralytics.com/compare/yolo11-vs-yolov8/",
)

# YOLOv8 detection, 640x640 input, batch 1, TensorRT 10 on a T4 (YOLOV8_T4_LATENCY).
YOLOV8_T4_TENSORRT_MS: dict[str, float] = {"n": 1.47, "s": 2.66, "m": 5.86, "l": 9.06, "x": 14.37}
YOLOV8_REFERENCE_PIXELS = 640 * 640

GPUS: dict[str, GpuReference] = {
    "t4": GpuReference(
        key="t4",
        name="NVIDIA T4",
        device_names=("T4",),
        memory_gb=16,
        memory_bandwidth_gbs=320.0,
        fp16_tensor_tflops=65.0,
        relative_to_t4=1.0,
        relative_basis="the reference",
        host="AWS g4dn.xlarge",
        host_vcpus=4,
        sources=(T4_DATASHEET, AWS_G4, YOLOV8_T4_LATENCY),
    ),
    "a10g": GpuReference(
        key="a10g",
        name="NVIDIA A10G",
        device_names=("A10G",),
        memory_gb=24,
        memory_bandwidth_gbs=600.0,
        fp16_tensor_tflops=None,
        # 600/320 GB/s. The tensor-compute ratio is at most the A10's 125/65 = 1.92 (the A10G has less
        # tensor compute than the A10 and NVIDIA publishes no figure), so the two bounds agree within 3%.
        relative_to_t4=600.0 / 320.0,
        relative_basis="memory bandwidth 600/320 GB/s; tensor FP16 at most 125/65 = 1.92 (A10 upper bound)",
        host="AWS g5.xlarge",
        host_vcpus=4,
        sources=(A10_DATASHEET, A10G_VS_A10, T4_DATASHEET, AWS_G5, YOLOV8_T4_LATENCY),
    ),
}


def yolov8_variant(model: str) -> str | None:
    """``n``/``s``/``m``/``l``/``x`` from a YOLOv8 model name (``person_yolov8s.pt`` -> ``s``), else None."""
    match = re.search(r"yolov8([nsmlx])(?![a-z])", model.lower())
    return match.group(1) if match else None


def gpu_for_device_name(device_name: str) -> GpuReference | None:
    """The reference GPU a CUDA/NVML device name denotes (``Tesla T4`` -> t4), if any."""
    for gpu in GPUS.values():
        if any(re.search(rf"\b{re.escape(n)}\b", device_name) for n in gpu.device_names):
            return gpu
    return None
