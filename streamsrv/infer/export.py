"""Export a YOLO ``.pt`` model to ONNX, OpenVINO IR or a TensorRT engine, cached by the weights' sha256.

An entry is a directory ``<cache>/<sha256[:16]>-<format>-<precision>/`` holding the exported model
and ``meta.json`` (the .pt model's class names, full hash, versions). It is built in a hidden temp
directory and renamed into place, so an entry that exists is complete; a crash leaves only a
``.tmp-*`` directory that is never read, and is removed once it is an hour old.

Weights are stored in fp32 except in INT8 entries: bf16/fp16 are runtime choices of a backend, so one entry serves
them all.
ONNX inputs are dynamic in batch, height and width, so rectangular letterbox shapes need no re-export.

A TensorRT engine is compiled for one GPU model, TensorRT version, precision and largest batch and input, so its
entry's name carries all of them (``EngineSpec.key``) instead of a precision alone. An INT8 OpenVINO IR is made
from the fp32 one and calibrated on frames, so its name carries the calibration (``Calibration.key``).

Example:
    >>> exported = export_model("person_yolov8s.pt", "openvino")  # doctest: +SKIP
    >>> exported.path.name, exported.class_names  # doctest: +SKIP
    ('model.xml', {0: 'Normal', 1: 'Fall'})
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from streamsrv.errors import ModelError
from streamsrv.infer.digest import file_sha256
from streamsrv.infer.quantize import Calibration, quantize_openvino

logger = logging.getLogger(__name__)

ExportFormat = Literal["onnx", "openvino", "tensorrt"]

CACHE_ENV = "STREAMSRV_CACHE"
STORED_PRECISION = "fp32"
# An export takes a minute or two; a temp directory this old belongs to an export that died.
STALE_TMP_AGE_S = 3600.0
DIGESTS_DIR = "digests"  # remembered content hashes of weights and calibration files (streamsrv.infer.digest)
MODEL_FILES: dict[ExportFormat, str] = {"onnx": "model.onnx", "openvino": "model.xml", "tensorrt": "model.engine"}
REQUIRED_PACKAGES: dict[ExportFormat, tuple[str, ...]] = {
    "onnx": ("onnx",),
    "openvino": ("onnx", "openvino"),
    "tensorrt": ("onnx", "tensorrt"),
}
EXTRAS: dict[ExportFormat, str] = {"onnx": "fast", "openvino": "fast", "tensorrt": "tensorrt"}


@dataclass(frozen=True, slots=True)
class EngineSpec:
    """What a TensorRT engine is built for; every field is part of its cache key.

    >>> EngineSpec("cuda:0", True, 8, 640, "NVIDIA A10G", "10.13.0").key()
    'fp16-b8-640-nvidia_a10g-trt10.13.0'
    """

    device: str  # cuda[:N], where the engine is built
    half: bool
    max_batch: int  # the dynamic batch range is 1..max_batch
    imgsz: int  # inputs up to imgsz on the long side (rectangles included)
    gpu: str  # the GPU's name: an engine does not move between GPU models
    tensorrt_version: str

    @property
    def precision(self) -> str:
        return "fp16" if self.half else "fp32"

    def key(self) -> str:
        gpu = re.sub(r"[^a-z0-9]+", "_", self.gpu.lower()).strip("_")
        return f"{self.precision}-b{self.max_batch}-{self.imgsz}-{gpu}-trt{self.tensorrt_version}"


@dataclass(frozen=True, slots=True)
class ExportedModel:
    """A cached export: ``path`` is the file a runtime loads; names come from the source .pt model."""

    path: Path
    class_names: dict[int, str]
    sha256: str
    format: ExportFormat
    precision: str


def default_cache_dir() -> Path:
    """``$STREAMSRV_CACHE``, else ``~/.cache/streamsrv/exports``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env) if env else Path.home() / ".cache" / "streamsrv" / "exports"


def export_model(
    model_path: str | Path,
    fmt: ExportFormat,
    cache_dir: Path | None = None,
    engine: EngineSpec | None = None,
    calibration: Calibration | None = None,
) -> ExportedModel:
    """Return the cached export of ``model_path`` in ``fmt``, exporting it first on a cache miss.

    ``engine`` is required for ``tensorrt`` and only for it; ``calibration`` makes an ``openvino`` export INT8.
    Raises ModelError when the weights are missing or unreadable, or an export package is absent.
    """
    if (fmt == "tensorrt") != (engine is not None):
        raise ValueError("an EngineSpec is needed for tensorrt exports, and only for them")
    if calibration is not None and fmt != "openvino":
        raise ValueError("only openvino exports are calibrated to INT8")
    source = Path(model_path)
    if not source.is_file():
        raise ModelError(f"cannot export model {str(model_path)!r}: not a file (exports need local .pt weights)")
    missing = [pkg for pkg in required_packages(fmt, engine, calibration) if importlib.util.find_spec(pkg) is None]
    if missing:
        # checked here because ultralytics would otherwise try to pip-install them, which fails offline
        raise ModelError(f"{fmt} export needs the {missing} package(s): pip install 'streamsrv[{EXTRAS[fmt]}]'")
    cache = cache_dir or default_cache_dir()
    remove_stale_tmp(cache)
    memo = cache / DIGESTS_DIR
    sha256 = file_sha256(source, memo)
    variant = engine.key() if engine else calibration.key(memo) if calibration else STORED_PRECISION
    entry = cache / f"{sha256[:16]}-{fmt}-{variant}"
    if not (entry / "meta.json").is_file():
        _build_entry(source, sha256, fmt, entry, cache, engine, calibration)
    return _read_entry(entry, fmt)


def required_packages(
    fmt: ExportFormat, engine: EngineSpec | None = None, calibration: Calibration | None = None
) -> tuple[str, ...]:
    """The importable packages an export needs.

    TensorRT 11 dropped the fp16 builder flag: ultralytics then converts the ONNX graph to fp16 with NVIDIA
    ModelOpt (``modelopt``) before building.

    >>> required_packages("tensorrt", EngineSpec("cuda:0", True, 8, 640, "Tesla T4", "11.4.0.106"))
    ('onnx', 'tensorrt', 'modelopt')
    """
    needs_modelopt = engine is not None and engine.half and int(engine.tensorrt_version.split(".")[0]) >= 11
    return REQUIRED_PACKAGES[fmt] + (("nncf",) if calibration else ()) + (("modelopt",) if needs_modelopt else ())


def remove_stale_tmp(cache: Path, max_age_s: float = STALE_TMP_AGE_S) -> list[Path]:
    """Delete ``.tmp-*`` directories older than ``max_age_s`` (left by crashed exports); returns them.

    Younger ones are left alone: another process may be exporting into one right now.
    """
    removed = []
    cutoff = time.time() - max_age_s
    for tmp in cache.glob(".tmp-*"):
        try:
            stale = tmp.is_dir() and tmp.stat().st_mtime < cutoff
        except OSError:  # removed by another process meanwhile
            continue
        if stale:
            logger.info("removing %s, left by an export that did not finish", tmp)
            shutil.rmtree(tmp, ignore_errors=True)
            removed.append(tmp)
    return removed


def _read_entry(entry: Path, fmt: ExportFormat) -> ExportedModel:
    meta = json.loads((entry / "meta.json").read_text())
    return ExportedModel(
        path=entry / MODEL_FILES[fmt],
        class_names={int(k): str(v) for k, v in meta["class_names"].items()},
        sha256=meta["sha256"],
        format=fmt,
        precision=meta["precision"],
    )


def _build_entry(
    source: Path,
    sha256: str,
    fmt: ExportFormat,
    entry: Path,
    cache: Path,
    engine: EngineSpec | None,
    calibration: Calibration | None,
) -> None:
    cache.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{entry.name}-", dir=cache))
    try:
        logger.info("exporting %s to %s (sha256 %s), this takes a while...", source.name, fmt, sha256[:16])
        start = time.monotonic()
        if fmt == "onnx":
            class_names = _export_onnx(source, tmp)
        elif engine is not None:
            class_names = _export_engine(source, tmp, engine)
        elif calibration is not None:
            fp32_model = export_model(source, "openvino", cache)
            quantize_openvino(fp32_model.path, tmp / MODEL_FILES["openvino"], calibration)
            class_names = fp32_model.class_names
        else:
            onnx_model = export_model(source, "onnx", cache)
            _convert_openvino(onnx_model.path, tmp)
            class_names = onnx_model.class_names
        meta = {
            "source": str(source.resolve()),
            "sha256": sha256,
            "format": fmt,
            "precision": engine.precision if engine else "int8" if calibration else STORED_PRECISION,
            "engine": engine.key() if engine else None,
            "calibration": _calibration_meta(calibration),
            "class_names": {str(k): v for k, v in class_names.items()},
            "versions": _versions(fmt, calibration is not None),
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
        try:
            tmp.rename(entry)
        except OSError:
            if not (entry / "meta.json").is_file():
                raise
            logger.info("another process exported %s first; using its entry", entry.name)
        else:
            logger.info("exported %s to %s in %.1f s: %s", source.name, fmt, time.monotonic() - start, entry)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _load_copy(source: Path, out_dir: Path) -> tuple[Any, Path]:
    """The model loaded from a copy of its weights in ``out_dir``: ultralytics' exporter writes next to its input."""
    # Imported on use: torch is needed only to export, not to run a cached export (onnxruntime, openvino).
    from streamsrv.infer.torch_backend import load_yolo

    weights = out_dir / "model.pt"
    shutil.copyfile(source, weights)
    yolo = load_yolo(str(weights))
    if yolo.task != "detect":
        raise ModelError(f"model {str(source)!r} is a {yolo.task!r} model; streamsrv needs a detection model")
    return yolo, weights


def _export_onnx(source: Path, out_dir: Path) -> dict[int, str]:
    yolo, weights = _load_copy(source, out_dir)
    try:
        # simplify=False: onnxslim is not a dependency, and ultralytics would try to pip-install it
        exported = yolo.export(format="onnx", dynamic=True, simplify=False, device="cpu", verbose=False)
    except Exception as exc:  # torch.onnx raises a wide range of errors on unexportable modules
        raise ModelError(f"cannot export {str(source)!r} to ONNX: {exc}") from exc
    Path(exported).rename(out_dir / MODEL_FILES["onnx"])
    weights.unlink()
    return {int(k): str(v) for k, v in yolo.names.items()}


def _export_engine(source: Path, out_dir: Path, engine: EngineSpec) -> dict[int, str]:
    """ultralytics' TensorRT exporter (ONNX, then the TensorRT builder) with a dynamic batch of 1..max_batch."""
    from ultralytics.cfg import DEFAULT_CFG_DICT

    yolo, weights = _load_copy(source, out_dir)
    # ultralytics 8.4 replaced half=True with quantize=16
    precision: dict[str, Any] = {"quantize": 16} if "quantize" in DEFAULT_CFG_DICT else {"half": True}
    logger.info(
        "building a TensorRT %s engine for %s (batch 1-%d, input up to %d px): the builder times every layer, "
        "which takes minutes; its steps follow",
        engine.precision,
        engine.gpu,
        engine.max_batch,
        engine.imgsz,
    )
    try:
        exported = yolo.export(
            format="engine",
            dynamic=True,
            batch=engine.max_batch,
            imgsz=engine.imgsz,
            device=engine.device,
            simplify=False,
            verbose=True,
            **(precision if engine.half else {}),
        )
    except Exception as exc:  # the TensorRT builder and its ONNX parser raise a wide range of errors
        raise ModelError(f"cannot build a TensorRT engine from {str(source)!r}: {exc}") from exc
    Path(exported).rename(out_dir / MODEL_FILES["tensorrt"])
    for leftover in (weights, weights.with_suffix(".onnx")):
        leftover.unlink(missing_ok=True)
    return {int(k): str(v) for k, v in yolo.names.items()}


def _convert_openvino(onnx_path: Path, out_dir: Path) -> None:
    import openvino as ov

    try:
        ov_model = ov.convert_model(str(onnx_path))
        # fp32 weights: the CPU plugin would expand fp16 weights again, and bf16 is a compile-time hint
        ov.save_model(ov_model, str(out_dir / MODEL_FILES["openvino"]), compress_to_fp16=False)
    except Exception as exc:  # openvino raises its own RuntimeError/OpConversionFailure types
        raise ModelError(f"cannot convert {str(onnx_path)!r} to OpenVINO IR: {exc}") from exc


def _calibration_meta(calibration: Calibration | None) -> dict[str, object] | None:
    if calibration is None:
        return None
    return {"source": str(calibration.source.resolve()), "frames": calibration.frames, "imgsz": calibration.imgsz}


def _versions(fmt: ExportFormat, quantized: bool) -> dict[str, str]:
    import onnx
    import torch
    import ultralytics

    versions = {"ultralytics": ultralytics.__version__, "torch": torch.__version__, "onnx": onnx.__version__}
    if fmt == "openvino":
        import openvino as ov

        versions["openvino"] = ov.__version__
    if quantized:
        import nncf

        versions["nncf"] = nncf.__version__
    if fmt == "tensorrt":
        import tensorrt

        versions["tensorrt"] = tensorrt.__version__
    return versions
