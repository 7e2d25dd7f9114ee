"""A detector: letterbox -> backend forward -> NMS per label -> boxes in source pixels.

Model class names are mapped through ``model.labels`` aliases (``Normal``/``Fall`` -> ``person``)
before NMS, so two classes that mean the same thing never yield two boxes on one object.

Example:
    >>> det = Detector(backend, ModelConfig(labels={"Normal": "person", "Fall": "person"}))  # doctest: +SKIP
    >>> det.detect([frame_bgr])[0].xyxy  # doctest: +SKIP
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import cast

import numpy as np
import numpy.typing as npt
import torch
import torchvision

from streamsrv.config.models import ModelConfig
from streamsrv.errors import ConfigError
from streamsrv.infer.backend import Backend
from streamsrv.infer.gpu_preprocess import device_letterbox_for
from streamsrv.infer.letterbox import letterbox_batch, to_network_input, unletterbox
from streamsrv.infer.torch_backend import ModuleBackend
from streamsrv.types import Detections

MAX_DETECTIONS = 300
# NMS is quadratic in candidates; an untrained or confused model can pass thousands per frame.
MAX_NMS_CANDIDATES = 3000


@dataclass(frozen=True, slots=True)
class DetectTiming:
    """Milliseconds spent per stage of the last ``detect`` call."""

    preprocess_ms: float
    forward_ms: float
    postprocess_ms: float


class LabelMap:
    """Maps model class ids to output label ids through aliases, and filters labels.

    >>> m = LabelMap({0: "Normal", 1: "Fall"}, {"Normal": "person", "Fall": "person"}, None)
    >>> m.names, m.class_to_label.tolist()
    ({0: 'person'}, [0, 0])
    """

    def __init__(self, class_names: dict[int, str], aliases: dict[str, str], keep: list[str] | None) -> None:
        unknown = sorted(set(aliases) - set(class_names.values()))
        if unknown:
            raise ConfigError(
                f"model.labels: {unknown} are not classes of this model (it has {sorted(class_names.values())})"
            )
        label_ids: dict[str, int] = {}
        num_classes = max(class_names) + 1 if class_names else 0
        self.class_to_label = np.zeros(num_classes, np.int64)
        for cid in sorted(class_names):
            label = aliases.get(class_names[cid], class_names[cid])
            self.class_to_label[cid] = label_ids.setdefault(label, len(label_ids))
        self.names: dict[int, str] = {i: name for name, i in label_ids.items()}
        if keep is not None:
            missing = sorted(set(keep) - set(label_ids))
            if missing:
                raise ConfigError(f"model.classes: {missing} are not labels of this model (it has {sorted(label_ids)})")
        wanted = set(label_ids) if keep is None else set(keep)
        self.keep_class = np.array([self.names[int(lid)] in wanted for lid in self.class_to_label], np.bool_)


class Detector:
    """Batched detection with a backend; thread-compatible but not thread-safe."""

    def __init__(self, backend: Backend, model: ModelConfig, imgsz: int = 640) -> None:
        self.backend = backend
        self.imgsz = imgsz
        self.confidence = model.confidence
        self.iou = model.iou
        self.label_map = LabelMap(backend.class_names, model.labels, model.classes)
        self.last_timing = DetectTiming(0.0, 0.0, 0.0)
        # torch on CUDA: frames go to the GPU as uint8 and are letterboxed there (gpu_preprocess)
        self._device_letterbox = device_letterbox_for(backend, imgsz)

    @property
    def labels(self) -> dict[int, str]:
        return self.label_map.names

    def detect(self, frames: list[npt.NDArray[np.uint8]]) -> list[Detections]:
        """Detect objects in BGR frames of any sizes; one ``Detections`` per frame, in its pixels."""
        if not frames:
            return []
        t0 = time.perf_counter()
        if self._device_letterbox is not None:
            on_device = self._device_letterbox(frames)
            scales, pads = on_device.scales, on_device.pads
            t1 = time.perf_counter()
            raw = cast(ModuleBackend, self.backend).forward_tensor(on_device.images)
        else:
            lb = letterbox_batch(frames, self.imgsz)
            batch = to_network_input(lb.images)
            scales, pads = lb.scales, lb.pads
            t1 = time.perf_counter()
            raw = self.backend.forward(batch)
        t2 = time.perf_counter()
        out = [
            self._postprocess(raw[i], float(scales[i]), pads[i], f.shape[0], f.shape[1]) for i, f in enumerate(frames)
        ]
        t3 = time.perf_counter()
        self.last_timing = DetectTiming((t1 - t0) * 1e3, (t2 - t1) * 1e3, (t3 - t2) * 1e3)
        return out

    def _postprocess(
        self, pred: npt.NDArray[np.float32], scale: float, pad: npt.NDArray[np.float32], height: int, width: int
    ) -> Detections:
        scores_all = pred[4:]  # (num_classes, anchors)
        class_id = scores_all.argmax(axis=0)
        conf = scores_all[class_id, np.arange(scores_all.shape[1])]
        keep = (conf >= self.confidence) & self.label_map.keep_class[class_id]
        if not keep.any():
            return Detections.empty()
        if keep.sum() > MAX_NMS_CANDIDATES:
            cutoff = np.partition(conf[keep], -MAX_NMS_CANDIDATES)[-MAX_NMS_CANDIDATES]
            keep &= conf >= cutoff
        cxcywh = pred[:4, keep].T
        conf, label = conf[keep], self.label_map.class_to_label[class_id[keep]]
        xyxy = np.concatenate([cxcywh[:, :2] - cxcywh[:, 2:] / 2, cxcywh[:, :2] + cxcywh[:, 2:] / 2], axis=1)
        idx = torchvision.ops.batched_nms(
            torch.from_numpy(xyxy), torch.from_numpy(conf), torch.from_numpy(label), self.iou
        ).numpy()[:MAX_DETECTIONS]
        return Detections(
            xyxy=unletterbox(xyxy[idx], scale, pad, height, width),
            confidence=conf[idx].astype(np.float32),
            class_id=label[idx].astype(np.int32),
        )
