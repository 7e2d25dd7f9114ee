"""Export a YOLO ``.pt`` model to ONNX or OpenVINO IR, cached by the weights' sha256.

An entry is a directory ``<cache>/<sha256[:16]>-<format>-<precision>/`` holding the exported model
and ``meta.json`` (the .pt model's class names, full hash, versions). It is built in a hidden temp
directory and renamed into place, so an entry that exists is complete; a crash leaves only a
``.tmp-*`` directory that is never read, and is removed once it is an hour old.

Weights are stored in fp32: bf16/fp16 are runtime choices of a backend, so one entry serves them all.
ONNX inputs are dynamic in batch, height and width, so rectangular letterbox shapes need no re-export.

Example:
    >>> exported = export_model("person_yolov8s.pt", "openvino")  # doctest: +SKIP
    >>> exported.path.name, exported.class_names  # doctest: +SKIP
    ('model.xml', {0: 'Normal', 1: 'Fall'})
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from streamsrv.errors import ModelError

logger = logging.getLogger(__name__)

ExportFormat = Literal["onnx", "openvino"]

CACHE_ENV = "STREAMSRV_CACHE"
STORED_PRECISION = "fp32"
# An export takes a minute or two; a temp directory this old belongs to an export that died.
STALE_TMP_AGE_S = 3600.0
MODEL_FILES: dict[ExportFormat, str] = {"onnx": "model.onnx", "openvino": "model.xml"}
REQUIRED_PACKAGES: dict[ExportFormat, tuple[str, ...]] = {"onnx": ("onnx",), "openvino": ("onnx", "openvino")}


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


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def export_model(model_path: str | Path, fmt: ExportFormat, cache_dir: Path | None = None) -> ExportedModel:
    """Return the cached export of ``model_path`` in ``fmt``, exporting it first on a cache miss.

    Raises ModelError when the weights are missing or unreadable, or an export package is absent.
    """
    source = Path(model_path)
    if not source.is_file():
        raise ModelError(f"cannot export model {str(model_path)!r}: not a file (exports need local .pt weights)")
    missing = [pkg for pkg in REQUIRED_PACKAGES[fmt] if importlib.util.find_spec(pkg) is None]
    if missing:
        # checked here because ultralytics would otherwise try to pip-install them, which fails offline
        raise ModelError(f"{fmt} export needs the {missing} package(s): pip install 'streamsrv[fast]'")
    cache = cache_dir or default_cache_dir()
    remove_stale_tmp(cache)
    sha256 = file_sha256(source)
    entry = cache / f"{sha256[:16]}-{fmt}-{STORED_PRECISION}"
    if not (entry / "meta.json").is_file():
        _build_entry(source, sha256, fmt, entry, cache)
    return _read_entry(entry, fmt)


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


def _build_entry(source: Path, sha256: str, fmt: ExportFormat, entry: Path, cache: Path) -> None:
    cache.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{entry.name}-", dir=cache))
    try:
        logger.info("exporting %s to %s (sha256 %s), this takes a while...", source.name, fmt, sha256[:16])
        start = time.monotonic()
        if fmt == "onnx":
            class_names = _export_onnx(source, tmp)
        else:
            onnx_model = export_model(source, "onnx", cache)
            _convert_openvino(onnx_model.path, tmp)
            class_names = onnx_model.class_names
        meta = {
            "source": str(source.resolve()),
            "sha256": sha256,
            "format": fmt,
            "precision": STORED_PRECISION,
            "class_names": {str(k): v for k, v in class_names.items()},
            "versions": _versions(fmt),
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


def _export_onnx(source: Path, out_dir: Path) -> dict[int, str]:
    """ultralytics' exporter, on a copy of the weights because it writes next to its input."""
    from streamsrv.infer.torch_backend import load_yolo

    weights = out_dir / "model.pt"
    shutil.copyfile(source, weights)
    yolo = load_yolo(str(weights))
    if yolo.task != "detect":
        raise ModelError(f"model {str(source)!r} is a {yolo.task!r} model; streamsrv needs a detection model")
    try:
        # simplify=False: onnxslim is not a dependency, and ultralytics would try to pip-install it
        exported = yolo.export(format="onnx", dynamic=True, simplify=False, device="cpu", verbose=False)
    except Exception as exc:  # torch.onnx raises a wide range of errors on unexportable modules
        raise ModelError(f"cannot export {str(source)!r} to ONNX: {exc}") from exc
    Path(exported).rename(out_dir / MODEL_FILES["onnx"])
    weights.unlink()
    return {int(k): str(v) for k, v in yolo.names.items()}


def _convert_openvino(onnx_path: Path, out_dir: Path) -> None:
    import openvino as ov

    try:
        ov_model = ov.convert_model(str(onnx_path))
        # fp32 weights: the CPU plugin would expand fp16 weights again, and bf16 is a compile-time hint
        ov.save_model(ov_model, str(out_dir / MODEL_FILES["openvino"]), compress_to_fp16=False)
    except Exception as exc:  # openvino raises its own RuntimeError/OpConversionFailure types
        raise ModelError(f"cannot convert {str(onnx_path)!r} to OpenVINO IR: {exc}") from exc


def _versions(fmt: ExportFormat) -> dict[str, str]:
    import onnx
    import torch
    import ultralytics

    versions = {"ultralytics": ultralytics.__version__, "torch": torch.__version__, "onnx": onnx.__version__}
    if fmt == "openvino":
        import openvino as ov

        versions["openvino"] = ov.__version__
    return versions
