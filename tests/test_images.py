"""The single-image lane's one limit: a place is taken before decoding, refused with one message, given back."""

from __future__ import annotations

import pytest

from streamsrv.errors import Busy, LaneClosed
from streamsrv.jobs.images import ImageLane
from streamsrv.runtime.inference import InferenceHealth
from streamsrv.runtime.lanes import Lane, ResultCallback

BUSY = "2 images are being detected already (jobs.max_detect_inflight)"


class NoInference:
    """Places are handed out without any inference: no lane is opened before an image is queued."""

    def open_lane(
        self,
        on_result: ResultCallback,
        track: bool = True,
        detect_fps: float = 25.0,
        max_width: int = 3840,
        max_height: int = 2160,
    ) -> Lane:
        raise AssertionError("reserving a place opened a lane")

    def inference_health(self) -> InferenceHealth:
        return InferenceHealth(model_loaded=True)


def test_one_image_too_many_is_refused_once_with_the_setting_named() -> None:
    images = ImageLane(NoInference(), max_inflight=2)
    first, second = images.reserve(), images.reserve()
    with pytest.raises(Busy) as refused:
        images.reserve()
    assert str(refused.value) == BUSY and refused.value.retry_after_s == 1
    first.result.cancel()  # its upload would not decode: the place is free again
    third = images.reserve()
    with pytest.raises(Busy, match=r"\(jobs\.max_detect_inflight\)$"):
        images.reserve()
    images.close()
    for ticket in (second, third):
        assert isinstance(ticket.result.exception(timeout=5), LaneClosed)
    with pytest.raises(LaneClosed):
        images.reserve()
