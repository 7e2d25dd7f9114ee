"""The torch letterbox (GPU preprocessing) against the numpy/cv2 one, on the CPU where both run.

It is selected only for the torch backend on CUDA; here it runs on device "cpu", through the same code, so
its layout, pixels, staging-buffer reuse and boxes through the real model are checked without a GPU. The
CUDA-only parts (pinned memory, the copy event) are tested only where CUDA exists.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import numpy.typing as npt
import pytest
import torch

from streamsrv.config.models import InferenceConfig, ModelConfig
from streamsrv.infer.backend import create_backend
from streamsrv.infer.detector import Detector
from streamsrv.infer.gpu_preprocess import TorchLetterbox, device_letterbox_for
from streamsrv.infer.letterbox import PAD_VALUE, letterbox_batch, letterbox_shape, to_network_input
from streamsrv.infer.torch_backend import TorchBackend

Frame = npt.NDArray[np.uint8]


def clip_frame(path: Path, index: int) -> Frame:
    with av.open(str(path)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i == index:
                return frame.to_ndarray(format="bgr24")
    raise AssertionError(f"{path} has no frame {index}")


@pytest.fixture(scope="module")
def mixed_frames(clip_360p: Path, clip_720p: Path) -> list[Frame]:
    """Real frames of several sizes: 720p (downscaled x0.5), 360p (as is), 4:3 and portrait crops (upscaled)."""
    f720 = clip_frame(clip_720p, 100)
    f360 = clip_frame(clip_360p, 200)
    return [f720, f360, np.ascontiguousarray(f360[:, 100:580]), np.ascontiguousarray(f720[:, 400:700])]


def test_layout_is_letterbox_batch_layout(mixed_frames: list[Frame]) -> None:
    for frames in ([mixed_frames[0]], [mixed_frames[1]], mixed_frames[2:], mixed_frames):
        expected = letterbox_batch(frames, 640)
        got = TorchLetterbox("cpu", torch.float32, 640)(frames)
        b, h, w, _ = expected.images.shape
        assert tuple(got.images.shape) == (b, 3, h, w)
        np.testing.assert_array_equal(got.scales, expected.scales)
        np.testing.assert_array_equal(got.pads, expected.pads)


def test_pixels_match_the_cv2_letterbox_up_to_rounding(mixed_frames: list[Frame]) -> None:
    expected = to_network_input(letterbox_batch(mixed_frames, 640).images)
    got = TorchLetterbox("cpu", torch.float32, 640)(mixed_frames).images.numpy()
    diff = np.abs(got - expected) * 255  # in uint8 steps
    assert diff.max() <= 1.0
    assert diff.mean() < 0.3
    # the 360p frame needs no resize: only the uint8 -> float scaling, identical in both
    np.testing.assert_allclose(got[1], expected[1], atol=1e-6)
    # outside each frame's content, the same grey
    for i, frame in enumerate(mixed_frames):
        h, w, _ = letterbox_shape(frame.shape[0], frame.shape[1], 640)
        pad = np.ones(got.shape[2:], np.bool_)
        top, left = (got.shape[2] - h) // 2, (got.shape[3] - w) // 2
        pad[top : top + h, left : left + w] = False
        assert pad.any()
        np.testing.assert_allclose(got[i][:, pad], PAD_VALUE / 255, atol=1e-6)


def test_a_reused_staging_buffer_gives_what_a_fresh_one_gives(mixed_frames: list[Frame]) -> None:
    reused = TorchLetterbox("cpu", torch.float32, 640)
    reused(mixed_frames)  # grows the buffer to four frames
    reused(mixed_frames[1:2])
    again = reused(mixed_frames[::-1][:3]).images
    fresh = TorchLetterbox("cpu", torch.float32, 640)(mixed_frames[::-1][:3]).images
    assert torch.equal(again, fresh)


def test_half_precision_output(mixed_frames: list[Frame]) -> None:
    half = TorchLetterbox("cpu", torch.float16, 640)(mixed_frames[:2]).images
    full = TorchLetterbox("cpu", torch.float32, 640)(mixed_frames[:2]).images
    assert half.dtype == torch.float16
    torch.testing.assert_close(half.float(), full, atol=1e-3, rtol=1e-3)


def test_only_the_torch_backend_on_cuda_letterboxes_on_the_device(person_model: Path) -> None:
    cpu_backend = create_backend(ModelConfig(path=str(person_model)), InferenceConfig(device="cpu", threads=1))
    assert device_letterbox_for(cpu_backend, 640) is None


@pytest.mark.slow
def test_boxes_through_the_real_model_agree_within_a_pixel(person_model: Path, mixed_frames: list[Frame]) -> None:
    model = ModelConfig(path=str(person_model), labels={"Normal": "person", "Fall": "person"})
    backend = create_backend(model, InferenceConfig(device="cpu", threads=2))
    assert isinstance(backend, TorchBackend)
    detector = Detector(backend, model)
    reference = detector.detect(mixed_frames)
    # what the detector selects on CUDA, pointed at the CPU
    detector._device_letterbox = TorchLetterbox("cpu", backend.dtype, 640)
    on_device = detector.detect(mixed_frames)
    assert sum(len(d) for d in reference) >= 5, "the clip shows people; the comparison needs boxes"
    for ref, got in zip(reference, on_device, strict=True):
        assert len(got) == len(ref)
        for box in ref.xyxy:
            # pair each reference box with the nearest box (boxes on one frame are further apart than this)
            assert np.abs(got.xyxy - box).max(axis=1).min() <= 1.0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (pinned memory and device copies)")
def test_on_cuda_staging_is_pinned_and_pixels_match_the_cpu(mixed_frames: list[Frame]) -> None:
    on_gpu = TorchLetterbox("cuda", torch.float32, 640)
    got = on_gpu(mixed_frames)
    assert on_gpu.pinned and on_gpu._staging.is_pinned()
    assert got.images.device.type == "cuda"
    on_gpu(mixed_frames[:1])  # waits for the first batch's copies before refilling the buffer
    expected = TorchLetterbox("cpu", torch.float32, 640)(mixed_frames).images
    torch.testing.assert_close(got.images.cpu(), expected, atol=1.5 / 255, rtol=0)
