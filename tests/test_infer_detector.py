"""Letterboxing, label mapping and post-processing, without a real network."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from streamsrv.config.models import ModelConfig
from streamsrv.errors import ConfigError
from streamsrv.infer.detector import Detector, LabelMap
from streamsrv.infer.letterbox import PAD_VALUE, letterbox_batch, to_network_input, unletterbox


def frame(height: int, width: int, value: int = 7) -> npt.NDArray[np.uint8]:
    return np.full((height, width, 3), value, np.uint8)


@pytest.mark.parametrize(
    ("height", "width", "shape", "scale", "pad"),
    [
        (720, 1280, (384, 640), 0.5, (0, 12)),  # 16:9 -> 360x640 content, 12 px bands top and bottom
        (360, 640, (384, 640), 1.0, (0, 12)),  # already at size: no resize
        (1080, 1920, (384, 640), 1 / 3, (0, 12)),
        (1280, 720, (640, 384), 0.5, (12, 0)),  # portrait
        (480, 640, (480, 640), 1.0, (0, 0)),  # 4:3 fits the stride exactly
    ],
)
def test_letterbox_is_rectangular(
    height: int, width: int, shape: tuple[int, int], scale: float, pad: tuple[int, int]
) -> None:
    lb = letterbox_batch([frame(height, width)], imgsz=640)
    assert lb.images.shape == (1, *shape, 3)
    assert lb.scales[0] == pytest.approx(scale)
    assert lb.pads[0].tolist() == list(pad)


def test_mixed_batch_pads_to_the_largest_shape() -> None:
    lb = letterbox_batch([frame(720, 1280, value=1), frame(480, 640, value=2)], imgsz=640)
    assert lb.images.shape == (2, 480, 640, 3)
    # the 16:9 frame is centred in the 4:3 canvas: 60 px bands above and below its 360 rows
    assert lb.pads.tolist() == [[0, 60], [0, 0]]
    wide = lb.images[0, :, :, 0]
    assert (wide[:60] == PAD_VALUE).all() and (wide[420:] == PAD_VALUE).all()
    assert (wide[60:420] == 1).all()
    assert (lb.images[1] == 2).all()


def test_unletterbox_round_trip() -> None:
    height, width = 720, 1280
    lb = letterbox_batch([frame(height, width)], imgsz=640)
    scale, pad = float(lb.scales[0]), lb.pads[0]
    source = np.array([[100, 50, 300, 400], [0, 0, 1280, 720]], np.float32)
    network = source * scale + np.tile(pad, 2)
    np.testing.assert_allclose(unletterbox(network, scale, pad, height, width), source, atol=1e-3)


def test_unletterbox_clips_to_the_frame() -> None:
    pad = np.array([0, 12], np.float32)
    out = unletterbox(np.array([[-20, 0, 700, 390]], np.float32), 0.5, pad, 720, 1280)
    assert out.tolist() == [[0, 0, 1280, 720]]


def test_network_input_is_rgb_chw_in_unit_range() -> None:
    bgr = np.zeros((1, 32, 32, 3), np.uint8)
    bgr[..., 0] = 255  # blue
    x = to_network_input(bgr)
    assert x.shape == (1, 3, 32, 32) and x.dtype == np.float32 and x.flags.c_contiguous
    assert x[0, 2].max() == 1.0 and x[0, :2].max() == 0.0


def test_label_map_merges_aliases() -> None:
    m = LabelMap({0: "Normal", 1: "Fall"}, {"Normal": "person", "Fall": "person"}, None)
    assert m.names == {0: "person"}
    assert m.class_to_label.tolist() == [0, 0]
    assert m.keep_class.tolist() == [True, True]


def test_label_map_without_aliases_is_identity() -> None:
    m = LabelMap({0: "person", 1: "bicycle", 2: "car"}, {}, None)
    assert m.names == {0: "person", 1: "bicycle", 2: "car"}
    assert m.class_to_label.tolist() == [0, 1, 2]


def test_label_map_filters_after_aliasing() -> None:
    m = LabelMap({0: "person", 1: "car", 2: "truck"}, {"car": "vehicle", "truck": "vehicle"}, ["vehicle"])
    assert m.names == {0: "person", 1: "vehicle"}
    assert m.class_to_label.tolist() == [0, 1, 1]
    assert m.keep_class.tolist() == [False, True, True]


def test_label_map_unknown_alias_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"model.labels: \['Falling'\]"):
        LabelMap({0: "Normal", 1: "Fall"}, {"Falling": "person"}, None)


def test_label_map_unknown_class_filter_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"model.classes: \['Normal'\]"):
        LabelMap({0: "Normal", 1: "Fall"}, {"Normal": "person", "Fall": "person"}, ["Normal"])


class FixedBackend:
    """Returns one hand-made raw head output for every image."""

    name = "fixed"
    device = "cpu"

    def __init__(self, raw: npt.NDArray[np.float32]) -> None:
        self.class_names = {0: "Normal", 1: "Fall"}
        self.raw = raw

    def forward(self, batch: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        return np.repeat(self.raw[None], len(batch), axis=0)


def test_detector_merges_aliased_classes_and_maps_to_source_pixels() -> None:
    raw = np.zeros((6, 3), np.float32)  # cx, cy, w, h, Normal, Fall per anchor
    raw[:, 0] = [320, 192, 100, 200, 0.9, 0.0]  # a Normal person
    raw[:, 1] = [322, 192, 100, 200, 0.0, 0.8]  # the same person as Fall: must not become a second box
    raw[:, 2] = [100, 100, 20, 20, 0.1, 0.0]  # below confidence
    config = ModelConfig(labels={"Normal": "person", "Fall": "person"}, confidence=0.25)
    detector = Detector(FixedBackend(raw), config)
    [det] = detector.detect([frame(720, 1280)])
    assert detector.labels == {0: "person"}
    assert det.class_id.tolist() == [0]
    assert det.confidence.tolist() == pytest.approx([0.9])
    # network 270..370 x 92..292 -> minus pad (0, 12), divided by scale 0.5
    assert det.xyxy.tolist() == [[540, 160, 740, 560]]


def test_detector_on_empty_input() -> None:
    detector = Detector(FixedBackend(np.zeros((6, 1), np.float32)), ModelConfig())
    assert detector.detect([]) == []
    [det] = detector.detect([frame(360, 640)])
    assert len(det) == 0
