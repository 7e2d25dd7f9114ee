"""Capacity on a T4 or A10G: measured when the run is on one, else projected from this run's per-stage costs.

A projection takes the GPU stage from the raw throughput measured here (scaled by the GPUs' relative speed) or,
on a machine without a GPU, from Ultralytics' published T4 TensorRT latency; the host stage from the CPU cost per
stream measured here. The smaller of the two is the answer, and every figure it leans on is listed with its
source (``benchmarks/gpu_reference.py``).
"""

from __future__ import annotations

import argparse
import math
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from benchmarks.gpu_reference import YOLOV8_REFERENCE_PIXELS, YOLOV8_T4_TENSORRT_MS, GpuReference, yolov8_variant

if TYPE_CHECKING:  # streams_per_gpu imports this module
    from benchmarks.streams_per_gpu import HostCosts, Step


def plan(
    gpu: GpuReference,
    here: GpuReference | None,
    args: argparse.Namespace,
    capacity: int | None,
    raw_fps: float,
    step: Step | None,
    host: HostCosts,
    shape: tuple[int, int],
    clip_desc: str,
) -> dict[str, Any]:
    """Capacity on ``gpu``: measured when we run on it, else projected from measured per-stage costs."""
    if here is gpu:
        return {"gpu": gpu.key, "kind": "MEASURED", "streams": capacity, "note": f"measured on {gpu.name} in this run"}
    assumptions = [
        f"headroom: stages planned to {args.headroom:.0%} of capacity",
        f"host: {gpu.host}, {gpu.host_vcpus} vCPUs, each as fast as one logical CPU here ({cpu_name()})",
        "decoding on the CPU as measured here; NVDEC (hwaccel auto on a GPU host) would take it off the CPU",
        f"decode cost of this clip ({clip_desc}); cameras of other resolutions or codecs cost more or less",
        "host CPU per frame counts preprocessing as measured on the CPU here, though on CUDA it runs on the GPU",
    ]
    sources = [asdict(s) for s in gpu.sources]
    variant = args.plan_variant or yolov8_variant(args.model)
    if here is not None:
        gpu_img_s = raw_fps * gpu.relative_to_t4 / here.relative_to_t4
        assumptions.append(
            f"GPU stage: raw throughput measured here on {here.name} ({raw_fps:.1f} img/s) x "
            f"{gpu.relative_to_t4 / here.relative_to_t4:.3f} ({gpu.key}: {gpu.relative_basis})"
        )
    elif variant in YOLOV8_T4_TENSORRT_MS:
        pixels = shape[0] * shape[1]
        t4_ms = YOLOV8_T4_TENSORRT_MS[variant] * pixels / YOLOV8_REFERENCE_PIXELS
        gpu_img_s = 1000 / t4_ms * gpu.relative_to_t4
        assumptions += [
            f"GPU stage: Ultralytics' YOLOv8{variant} T4 TensorRT latency {YOLOV8_T4_TENSORRT_MS[variant]} ms "
            f"(640x640, batch 1) scaled to our {shape[0]}x{shape[1]} input by pixel count = {t4_ms:.2f} ms",
            "a TensorRT batch-1 figure: batching raises throughput (streamsrv's tensorrt backend builds dynamic-batch "
            "fp16 engines, not yet measured on a GPU), while its ultralytics torch fp16 path is slower; the net is "
            "unknown",
        ]
        if gpu.relative_to_t4 != 1:
            assumptions.append(f"{gpu.name} / T4 = {gpu.relative_to_t4:.3f}: {gpu.relative_basis}")
    else:
        return {
            "gpu": gpu.key,
            "kind": "PROJECTION",
            "streams": None,
            "note": f"no published T4 latency for model {args.model!r}; pass --plan-variant n|s|m|l|x",
            "sources": sources,
        }
    gpu_streams = math.floor(gpu_img_s * args.headroom / args.fps)
    decode = step.decode_cores_per_stream if step is not None else 0.0
    main_ms = step.cores["main"] * 1e3 / step.pipeline_fps if step is not None and step.pipeline_fps else 0.0
    per_stream_cores = decode + args.fps * (host.host_ms + main_ms) / 1e3
    cpu_streams = math.floor(gpu.host_vcpus * args.headroom / per_stream_cores) if per_stream_cores else None
    streams = gpu_streams if cpu_streams is None else min(gpu_streams, cpu_streams)
    return {
        "gpu": gpu.key,
        "kind": "PROJECTION",
        "streams": streams,
        "limited_by": "GPU inference" if cpu_streams is None or gpu_streams <= cpu_streams else "host CPU",
        "gpu_streams": gpu_streams,
        "cpu_streams": cpu_streams,
        "gpu_img_per_s": round(gpu_img_s, 1),
        "per_stream_cores": round(per_stream_cores, 4),
        "per_stream_cores_parts": {
            "decode": round(decode, 4),
            "detector_host_and_tracking": round(args.fps * host.host_ms / 1e3, 4),
            "main_process": round(args.fps * main_ms / 1e3, 4),
        },
        "host": gpu.host,
        "assumptions": assumptions,
        "sources": sources,
    }


def cpu_name() -> str:
    from benchmarks.backends import cpu_name as name  # imports torch: main process only

    return name()
