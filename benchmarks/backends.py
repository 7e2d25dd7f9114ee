"""Throughput of each CPU backend against plain ``YOLO.predict``, and agreement with torch fp32.

Runs every backend in one process on real 720p frames (network input 384x640), batch 1 and 4,
with the same thread count everywhere, and prints a table with ratios to the baseline (best of
``--repeats`` interleaved rounds).

    python -m benchmarks.backends                                 # untrained yolov8n: speed only
    python -m benchmarks.backends --model ../shared/models/person_yolov8s.pt --out backends.json

An untrained model (``*.yaml``) finds no objects, so agreement needs real weights.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file (python benchmarks/x.py): import from this checkout, as -m does
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import cv2
import numpy as np
import numpy.typing as npt
import torch
import torchvision
from tqdm import tqdm

from streamsrv.config.models import InferenceConfig, ModelConfig
from streamsrv.errors import ModelError
from streamsrv.infer import export
from streamsrv.infer.backend import create_backend
from streamsrv.infer.detector import Detector
from streamsrv.infer.letterbox import letterbox_batch
from streamsrv.types import Detections

Frame = npt.NDArray[np.uint8]
REPO_ROOT = Path(__file__).resolve().parent.parent
BASELINE = "ultralytics-predict"
IMGSZ = 640
BACKENDS = [
    ("ultralytics", "fp32"),
    ("onnxruntime", "fp32"),
    ("openvino", "fp32"),
    ("openvino", "bf16"),
    ("openvino", "int8"),
]


@dataclass(frozen=True, slots=True)
class Throughput:
    backend: str
    batch: int
    images: int
    seconds: float

    @property
    def img_per_s(self) -> float:
        return self.images / self.seconds


@dataclass(frozen=True, slots=True)
class Agreement:
    """Boxes of one backend against torch fp32 over all frames; IoUs of greedily matched pairs."""

    torch_boxes: int
    boxes: int
    matched: int
    share_iou_0_9: float
    min_iou: float
    max_count_diff: int


def shared_dir() -> Path:
    return Path(os.environ.get("STREAMSRV_SHARED", REPO_ROOT.parent / "shared"))


def read_frames(path: Path, count: int) -> list[Frame]:
    cap = cv2.VideoCapture(str(path))
    frames: list[Frame] = []
    while len(frames) < count:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(np.asarray(frame, dtype=np.uint8))
    cap.release()
    if not frames:
        raise SystemExit(f"no frames in {path}")
    return frames


def weights_file(model: str, workdir: Path) -> Path:
    """A .pt file for ``model``; a ``*.yaml`` is built untrained and saved, so every backend runs the same weights."""
    if not model.endswith(".yaml"):
        return Path(model)
    from ultralytics import YOLO

    path = workdir / f"{Path(model).stem}.pt"
    YOLO(model).save(str(path))
    return path


def measure(
    name: str, run: Callable[[list[Frame]], object], frames: list[Frame], batch: int, seconds: float, threads: int
) -> Throughput:
    """Images per second of ``run`` on consecutive batches, after two warm-up calls."""
    batches = [frames[i : i + batch] for i in range(0, len(frames) - batch + 1, batch)]
    for b in batches[:2]:
        run(b)
    # ultralytics resets torch to one thread on a 2-core machine whenever it selects a device
    torch.set_num_threads(threads)
    images, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        run(batches[(images // batch) % len(batches)])
        images += batch
    return Throughput(name, batch, images, time.perf_counter() - start)


def matched_ious(a: Detections, b: Detections, min_iou: float = 0.5) -> list[float]:
    """IoUs of boxes paired greedily, best pair first; pairs below ``min_iou`` stay unmatched."""
    iou = torchvision.ops.box_iou(torch.from_numpy(a.xyxy), torch.from_numpy(b.xyxy)).numpy()
    pairs: list[float] = []
    while iou.size and iou.max() >= min_iou:
        i, j = np.unravel_index(iou.argmax(), iou.shape)
        pairs.append(float(iou[i, j]))
        iou[i, :], iou[:, j] = 0, 0
    return pairs


def agreement(reference: list[Detections], other: list[Detections]) -> Agreement:
    ious = np.array([iou for a, b in zip(reference, other, strict=True) for iou in matched_ious(a, b)])
    return Agreement(
        torch_boxes=sum(len(d) for d in reference),
        boxes=sum(len(d) for d in other),
        matched=len(ious),
        share_iou_0_9=float((ious >= 0.9).mean()) if len(ious) else float("nan"),
        min_iou=float(ious.min()) if len(ious) else float("nan"),
        max_count_diff=max(abs(len(a) - len(b)) for a, b in zip(reference, other, strict=True)),
    )


def detect_all(run: Callable[[list[Frame]], list[Detections]], frames: list[Frame], batch: int) -> list[Detections]:
    return [d for i in range(0, len(frames), batch) for d in run(frames[i : i + batch])]


def ultralytics_detections(result: Any) -> Detections:
    boxes = result.boxes
    return Detections(
        xyxy=boxes.xyxy.numpy().astype(np.float32),
        confidence=boxes.conf.numpy().astype(np.float32),
        class_id=boxes.cls.numpy().astype(np.int32),
    )


def predict_runner(
    weights: Path, model_config: ModelConfig, imgsz: tuple[int, int]
) -> Callable[[list[Frame]], list[Detections]]:
    from ultralytics import YOLO

    yolo = YOLO(str(weights), task="detect")

    def run(frames: list[Frame]) -> list[Detections]:
        results = yolo.predict(
            frames, imgsz=imgsz, conf=model_config.confidence, iou=model_config.iou, device="cpu", verbose=False
        )
        return [ultralytics_detections(r) for r in results]

    return run


def print_table(results: list[Throughput], agreements: dict[str, Agreement], setup_s: dict[str, float]) -> None:
    base = {r.batch: r.img_per_s for r in results if r.backend == BASELINE}
    names = list(dict.fromkeys(r.backend for r in results))
    batches = sorted(base)
    header = "| backend | " + " | ".join(f"b{b} img/s | ×base" for b in batches)
    header += " | boxes vs torch | IoU≥0.9 | min IoU | max Δcount | setup s |"
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for name in names:
        cells = []
        for b in batches:
            r = next(r for r in results if r.backend == name and r.batch == b)
            cells.append(f"{r.img_per_s:.1f} | {r.img_per_s / base[b]:.2f}")
        a = agreements.get(name)
        agree = (
            f"{a.matched}/{a.torch_boxes} matched ({a.boxes}) | {a.share_iou_0_9:.1%} | {a.min_iou:.3f} | "
            f"{a.max_count_diff}"
            if a is not None and a.torch_boxes
            else "no boxes | - | - | -"
        )
        print(f"| {name} | " + " | ".join(cells) + f" | {agree} | {setup_s.get(name, 0):.1f} |")


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="yolov8n.yaml", help="a .pt file, or a .yaml for an untrained model")
    parser.add_argument("--clip", type=Path, default=shared_dir() / "media" / "concourse_720p.mp4")
    parser.add_argument(
        "--calibration",
        type=Path,
        default=shared_dir() / "media" / "concourse_360p.mp4",
        help="what int8 is calibrated on: the same scene as --clip, at another resolution, by default",
    )
    parser.add_argument("--calibration-frames", type=int, default=200)
    parser.add_argument("--frames", type=int, default=32, help="frames read from the clip and cycled through")
    parser.add_argument("--seconds", type=float, default=5.0, help="timed run per backend and batch size")
    parser.add_argument("--repeats", type=int, default=3, help="rounds over all backends; the best one counts")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--cache", type=Path, help="export cache (default: a fresh temp dir, so exports are timed)")
    parser.add_argument("--out", type=Path, help="write the results as JSON")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="streamsrv-bench-") as workdir:
        run_benchmark(args, Path(workdir))


def run_benchmark(args: argparse.Namespace, workdir: Path) -> None:
    frames = read_frames(args.clip, args.frames)
    os.environ[export.CACHE_ENV] = str(args.cache or workdir / "exports")
    weights = weights_file(args.model, workdir)
    model_config = ModelConfig(path=str(weights))
    # the same rectangular input our letterbox makes, e.g. 384x640 for 16:9
    height, width = letterbox_batch(frames[:1], IMGSZ).images.shape[1:3]
    imgsz = (height, width)

    runners: dict[str, Callable[[list[Frame]], list[Detections]]] = {}
    setup_s: dict[str, float] = {}
    start = time.perf_counter()
    runners[BASELINE] = predict_runner(weights, model_config, imgsz)
    setup_s[BASELINE] = time.perf_counter() - start
    for backend, precision in tqdm(BACKENDS, desc="loading and exporting", unit="backend"):
        start = time.perf_counter()
        inference = InferenceConfig(
            backend=backend,
            device="cpu",
            precision=precision,
            threads=args.threads,
            calibration=str(args.calibration) if precision == "int8" else None,
            calibration_frames=args.calibration_frames,
        )
        try:
            detector = Detector(create_backend(model_config, inference), model_config, imgsz=IMGSZ)
        except ModelError as exc:
            tqdm.write(f"skipping {backend} {precision}: {exc}")
            continue
        if detector.backend.name in runners:  # e.g. bf16 fell back to fp32 on this CPU
            continue
        runners[detector.backend.name] = detector.detect
        setup_s[detector.backend.name] = time.perf_counter() - start

    # rounds interleave the backends and the best round counts: other work on a shared machine
    # comes in bursts that would otherwise land on whichever backend happened to run then
    rounds: list[Throughput] = []
    with tqdm(total=args.repeats * len(runners) * len(args.batches), desc="measuring", unit="run") as bar:
        for _ in range(args.repeats):
            for name, run in runners.items():
                for batch in args.batches:
                    bar.set_postfix_str(f"{name} b{batch}")
                    rounds.append(measure(name, run, frames, batch, args.seconds, args.threads))
                    bar.update()
    results = [
        max((r for r in rounds if (r.backend, r.batch) == key), key=lambda r: r.img_per_s)
        for key in dict.fromkeys((r.backend, r.batch) for r in rounds)
    ]

    reference = detect_all(runners["ultralytics-torch-fp32"], frames, max(args.batches))
    agreements = {
        name: agreement(reference, detect_all(run, frames, max(args.batches))) for name, run in runners.items()
    }
    print(
        f"\n{args.model}, {len(frames)} frames of {args.clip.name}, input {imgsz[0]}x{imgsz[1]}, "
        f"{args.threads} threads, {cpu_name()}\n"
    )
    print_table(results, agreements, setup_s)
    if args.out:
        report = {
            "model": args.model,
            "clip": str(args.clip),
            "frames": len(frames),
            "imgsz": imgsz,
            "threads": args.threads,
            "seconds": args.seconds,
            "repeats": args.repeats,
            "throughput_best": [{**asdict(r), "img_per_s": r.img_per_s} for r in results],
            "throughput_rounds": [{**asdict(r), "img_per_s": r.img_per_s} for r in rounds],
            "agreement_vs_torch": {name: asdict(a) for name, a in agreements.items()},
            "setup_s": setup_s,
        }
        args.out.write_text(json.dumps(report, indent=2))
        print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
