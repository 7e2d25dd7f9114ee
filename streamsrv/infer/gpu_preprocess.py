"""Letterbox and normalise a batch on the model's device, for the torch and TensorRT backends on CUDA.

The CPU path (``letterbox.py``) resizes with cv2 and builds a float32 batch that is 4x the size of the
frames; on CUDA that costs CPU time per frame and a large host-to-device copy. Here frames are copied
once into a pinned uint8 staging buffer (reused across batches), sent to the GPU as uint8, and resized
(bilinear, like cv2's INTER_LINEAR), padded, flipped to RGB and scaled to [0, 1] there.

The layout (input shape, scales, pads) is exactly ``letterbox_batch``'s, so NMS and unletterbox are
shared; pixels differ only in rounding (cv2 rounds the resized image to uint8, this does not). The same
code runs on ``cpu``, which is how it is tested without a GPU.

Example:
    >>> lb = TorchLetterbox("cpu", torch.float32, imgsz=640)
    >>> batch = lb([np.zeros((720, 1280, 3), np.uint8)])
    >>> tuple(batch.images.shape), batch.scales.tolist()
    ((1, 3, 384, 640), [0.5])
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F

from streamsrv.infer.backend import Backend
from streamsrv.infer.letterbox import PAD_VALUE, STRIDE, letterbox_shape
from streamsrv.infer.torch_backend import ModuleBackend
from streamsrv.types import FloatArray


@dataclass(frozen=True, slots=True)
class DeviceBatch:
    """``images`` (B, 3, H, W) RGB in [0, 1] on the device; ``scales`` (B,); ``pads`` (B, 2) as (x, y)."""

    images: torch.Tensor
    scales: FloatArray
    pads: FloatArray


class TorchLetterbox:
    """Letterboxes BGR uint8 frames of any sizes into one network input on ``device``; not thread-safe."""

    def __init__(self, device: str, dtype: torch.dtype, imgsz: int) -> None:
        self.device = torch.device(device)
        self.dtype = dtype
        self.imgsz = imgsz
        # Pinned pages let the copy to the GPU run by DMA without a bounce through pageable memory.
        self.pinned = self.device.type == "cuda"
        self._staging = torch.empty(0, dtype=torch.uint8, pin_memory=self.pinned)
        self._copies_done: torch.cuda.Event | None = None

    def __call__(self, frames: list[npt.NDArray[np.uint8]]) -> DeviceBatch:
        shapes = [letterbox_shape(f.shape[0], f.shape[1], self.imgsz) for f in frames]
        out_h = math.ceil(max(s[0] for s in shapes) / STRIDE) * STRIDE
        out_w = math.ceil(max(s[1] for s in shapes) / STRIDE) * STRIDE
        images = torch.full((len(frames), 3, out_h, out_w), PAD_VALUE / 255.0, dtype=self.dtype, device=self.device)
        scales = np.empty(len(frames), np.float32)
        pads = np.empty((len(frames), 2), np.float32)
        for i, (host, (h, w, scale)) in enumerate(zip(self._stage(frames), shapes, strict=True)):
            top, left = (out_h - h) // 2, (out_w - w) // 2
            x = host.to(self.device, non_blocking=True).permute(2, 0, 1).flip(0).unsqueeze(0).float()
            if (h, w) != tuple(x.shape[2:]):
                x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)
            images[i, :, top : top + h, left : left + w] = x[0] / 255.0
            scales[i] = scale
            pads[i] = (left, top)
        if self.pinned:
            self._copies_done = torch.cuda.Event()
            self._copies_done.record()
        return DeviceBatch(images, scales, pads)

    def _stage(self, frames: list[npt.NDArray[np.uint8]]) -> list[torch.Tensor]:
        """Copy the frames into the staging buffer; one (H, W, 3) view of it per frame."""
        if self._copies_done is not None:
            # the previous batch's copies to the GPU may still be reading the buffer
            self._copies_done.synchronize()
        needed = sum(f.nbytes for f in frames)
        if self._staging.numel() < needed:
            self._staging = torch.empty(needed, dtype=torch.uint8, pin_memory=self.pinned)
        views, offset = [], 0
        for frame in frames:
            view = self._staging[offset : offset + frame.nbytes].view(frame.shape)
            view.copy_(torch.from_numpy(frame))
            views.append(view)
            offset += frame.nbytes
        return views


def device_letterbox_for(backend: Backend, imgsz: int) -> TorchLetterbox | None:
    """A GPU letterbox when ``backend`` runs a torch module (torch, TensorRT) on CUDA; None means the CPU path."""
    if isinstance(backend, ModuleBackend) and backend.device.startswith("cuda"):
        return TorchLetterbox(backend.device, backend.dtype, imgsz)
    return None
