"""Hardware decoding: chosen per camera, probed once per process, CPU decoding with a logged reason otherwise.

On a machine without a usable hardware decoder (CI, this repo's dev machines) the fallback tests run and
the hardware test skips; on one with NVDEC/VA-API/QSV it is the other way round.
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing as mp
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from streamsrv.config.models import CameraConfig
from streamsrv.decode.hwaccel import HW_DECODERS, choose_hw_decoder, hw_decoder_unusable
from streamsrv.decode.process import _Decoder
from streamsrv.decode.source import VideoSource
from streamsrv.ipc.frame_ring import FrameRing
from streamsrv.ipc.messages import DecoderStatus
from streamsrv.ipc.signals import FramesReady, StopFlag
from streamsrv.runtime.stats import CameraStatsTracker
from streamsrv.types import CameraState

NO_HW_DECODER = choose_hw_decoder("auto") is None


@pytest.fixture(autouse=True)
def fresh_choice() -> Iterator[None]:
    """The choice is cached per process (and logged once); each test sees it made afresh."""
    choose_hw_decoder.cache_clear()
    yield
    choose_hw_decoder.cache_clear()


def first_frames(cam: CameraConfig, n: int) -> tuple[VideoSource, list[np.ndarray]]:
    src = VideoSource(cam, realtime=False, skip=False)
    try:
        src.open()
        return src, [f.image for f in itertools.islice(src.frames(), n)]
    finally:
        src.close()


def test_none_decodes_on_the_cpu(clip_360p: Path) -> None:
    src, frames = first_frames(CameraConfig(id="c", url=str(clip_360p), hwaccel="none"), 5)
    assert src.decoder == "cpu"
    assert [f.shape for f in frames] == [(360, 640, 3)] * 5


@pytest.mark.skipif(not NO_HW_DECODER, reason="a hardware decoder is usable here")
def test_auto_without_a_hardware_decoder_decodes_on_the_cpu_and_says_why(
    clip_360p: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="streamsrv.decode.hwaccel"):
        src, frames = first_frames(CameraConfig(id="c", url=str(clip_360p), hwaccel="auto"), 5)
        again, _ = first_frames(CameraConfig(id="c", url=str(clip_360p), hwaccel="auto"), 1)
    assert src.decoder == again.decoder == "cpu"
    reasons = [r for r in caplog.records if "decoding on the CPU" in r.getMessage()]
    assert len(reasons) == 1, "the reason is logged once per process, not per open"
    assert reasons[0].levelno == logging.INFO
    for device_type in HW_DECODERS:
        assert device_type in reasons[0].getMessage()
    _, cpu_frames = first_frames(CameraConfig(id="c", url=str(clip_360p), hwaccel="none"), 5)
    assert all(np.array_equal(a, b) for a, b in zip(frames, cpu_frames, strict=True))


@pytest.mark.parametrize("device_type", HW_DECODERS)
def test_a_named_device_that_is_unusable_falls_back_with_a_warning(
    device_type: str, clip_360p: Path, caplog: pytest.LogCaptureFixture
) -> None:
    reason = hw_decoder_unusable(device_type)
    if reason is None:
        pytest.skip(f"{device_type} decoding works here")
    with caplog.at_level(logging.INFO, logger="streamsrv.decode.hwaccel"):
        cam = CameraConfig.model_validate({"id": "c", "url": str(clip_360p), "hwaccel": device_type})
        src, frames = first_frames(cam, 3)
    assert src.decoder == "cpu"
    assert len(frames) == 3
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [f"hwaccel {device_type}: decoding on the CPU: {reason}"]


@pytest.mark.skipif(NO_HW_DECODER, reason="no usable hardware decoder here (needs NVDEC, VA-API or QSV)")
def test_auto_decodes_on_the_hardware_decoder_when_there_is_one(clip_360p: Path) -> None:
    src, frames = first_frames(CameraConfig(id="c", url=str(clip_360p), hwaccel="auto"), 5)
    assert src.decoder == choose_hw_decoder("auto")
    _, cpu_frames = first_frames(CameraConfig(id="c", url=str(clip_360p), hwaccel="none"), 5)
    for hw, cpu in zip(frames, cpu_frames, strict=True):
        assert hw.shape == cpu.shape
        # same bitstream, same decoder output up to the NV12 -> BGR conversion path
        assert np.abs(hw.astype(np.int16) - cpu.astype(np.int16)).mean() < 2.0


def test_the_decoder_process_reports_where_it_decodes(clip_360p: Path) -> None:
    ctx = mp.get_context("spawn")
    cam = CameraConfig(id="c", url=str(clip_360p), realtime=False, detect_fps=25)
    ring = FrameRing.create(f"test-{os.getpid()}-hwaccel", 640, 360)
    reader, writer = ctx.Pipe(duplex=False)
    decoder = _Decoder(cam, FrameRing.attach(ring.path, writable=True), FramesReady(ctx), writer, StopFlag(ctx))
    worker = threading.Thread(target=decoder.run)
    try:
        worker.start()
        worker.join(timeout=60)
        assert not worker.is_alive()
        messages: list[DecoderStatus] = []
        while reader.poll():
            messages.append(reader.recv())
    finally:
        ring.close()
        ring.unlink()
    online = next(m for m in messages if m.state == CameraState.ONLINE)
    assert (online.codec, online.decoder) == ("h264", choose_hw_decoder("auto") or "cpu")
    assert messages[-1].state == CameraState.OFFLINE

    stats = CameraStatsTracker("c")
    stats.decoder = online.decoder
    assert stats.snapshot().decoder == online.decoder
