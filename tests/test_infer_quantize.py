"""INT8 calibration: where its frames come from, what makes a new cache entry, and bad calibration sources."""

from __future__ import annotations

import importlib.util
import wave
from pathlib import Path

import cv2
import numpy as np
import pytest

from streamsrv.errors import ModelError
from streamsrv.infer import export
from streamsrv.infer.quantize import Calibration, head_scope, read_calibration_frames

needs_nncf = pytest.mark.skipif(
    not all(importlib.util.find_spec(p) for p in ("nncf", "openvino")), reason="nncf and openvino are needed"
)


def _write_frames(clip: Path, folder: Path, count: int, step: int = 25) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    cap = cv2.VideoCapture(str(clip))
    paths: list[Path] = []
    index = 0
    while len(paths) < count:
        ok, frame = cap.read()
        assert ok, f"{clip} ended early"
        if index % step == 0:
            paths.append(folder / f"snap_{len(paths):03d}.jpg")
            assert cv2.imwrite(str(paths[-1]), frame)
        index += 1
    cap.release()
    return paths


def _silent_wav(path: Path) -> Path:
    with wave.open(str(path), "wb") as audio:
        audio.setnchannels(1)
        audio.setsampwidth(2)
        audio.setframerate(8000)
        audio.writeframes(b"\0\0" * 8000)
    return path


def test_video_frames_are_spread_over_the_whole_clip(clip_360p: Path) -> None:
    frames = read_calibration_frames(clip_360p, 10)
    cap = cv2.VideoCapture(str(clip_360p))
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    cap.set(cv2.CAP_PROP_POS_FRAMES, (total // 10) * 9)
    ok, tenth = cap.read()
    cap.release()
    assert ok and len(frames) == 10
    assert frames[0].shape == (360, 640, 3)
    # the last one is from the end of the clip, not the tenth frame of its first second
    assert np.abs(frames[-1].astype(int) - tenth.astype(int)).mean() < 2
    assert np.abs(frames[-1].astype(int) - frames[0].astype(int)).mean() > 5


def test_image_folders_are_sampled_evenly_in_name_order(clip_360p: Path, tmp_path: Path) -> None:
    paths = _write_frames(clip_360p, tmp_path / "snaps", 9, step=10)
    (tmp_path / "snaps" / "notes.txt").write_text("not an image")
    picked = read_calibration_frames(tmp_path / "snaps", 3)
    expected = [cv2.imread(str(paths[i])) for i in (0, 4, 8)]
    assert len(picked) == 3
    assert all(np.array_equal(a, b) for a, b in zip(picked, expected, strict=True))
    assert len(read_calibration_frames(tmp_path / "snaps", 100)) == 9


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d / "missing.mp4", "neither a video file nor a folder of images"),
        (lambda d: d, "has no"),
        (lambda d: (d / "a.mp4").write_text("not a video") and d / "a.mp4", "no video frames could be decoded"),
        (lambda d: _silent_wav(d / "a.wav"), "has no video stream"),
        (lambda d: (d / "x.jpg").write_bytes(b"\xff\xd8broken") and d, "cannot read image"),
    ],
    ids=["missing", "empty-folder", "not-a-video", "audio-only", "broken-image"],
)
def test_bad_calibration_sources_name_the_setting(tmp_path: Path, make: object, message: str) -> None:
    source = make(tmp_path)  # type: ignore[operator]
    with pytest.raises(ModelError, match=message) as err:
        read_calibration_frames(source, 8)
    assert str(err.value).startswith("inference.calibration: ")


def test_the_head_is_found_by_its_last_sigmoid() -> None:
    ops = [
        ("/model.2/m.0/Sigmoid", "Sigmoid"),
        ("/model.22/dfl/conv/Conv", "Convolution"),
        ("/model.22/Sigmoid", "Sigmoid"),
    ]
    assert head_scope(ops) == "/model.22/"
    with pytest.raises(ModelError, match="detection head"):
        head_scope([("Conv_0", "Convolution")])


@pytest.mark.slow
@needs_nncf
def test_int8_entry_is_quantized_cached_and_keyed_by_calibration_content(
    person_model: Path, clip_360p: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import openvino as ov

    snaps = _write_frames(clip_360p, tmp_path / "snaps", 8)
    cache = tmp_path / "cache"
    calibration = Calibration(tmp_path / "snaps", frames=8, imgsz=320)
    first = export.export_model(person_model, "openvino", cache, calibration=calibration)
    assert first.precision == "int8"
    assert first.path.parent.name == f"{first.sha256[:16]}-openvino-{calibration.key()}"
    ops = ov.Core().read_model(str(first.path)).get_ordered_ops()
    quantized = [op.get_friendly_name() for op in ops if op.get_type_name() == "FakeQuantize"]
    assert len(quantized) > 50, "the backbone's convolutions should be quantized"
    head = head_scope([(op.get_friendly_name(), op.get_type_name()) for op in ops])
    assert not [name for name in quantized if name.startswith(head)], "the head must stay fp32"

    def no_quantize(*args: object) -> None:
        raise AssertionError("quantized again despite a cache entry")

    monkeypatch.setattr(export, "quantize_openvino", no_quantize)
    assert export.export_model(person_model, "openvino", cache, calibration=calibration).path == first.path
    monkeypatch.undo()

    # other frames make another entry: the key follows the folder's content, not its name
    _write_frames(clip_360p, tmp_path / "other", 2, step=7)[1].replace(snaps[0])
    assert calibration.key() != first.path.parent.name.split("-openvino-")[1]
    second = export.export_model(person_model, "openvino", cache, calibration=calibration)
    assert second.path.parent != first.path.parent
    assert sorted(p.name for p in cache.iterdir()) == sorted(
        [
            f"{first.sha256[:16]}-onnx-fp32",
            f"{first.sha256[:16]}-openvino-fp32",
            first.path.parent.name,
            second.path.parent.name,
            export.DIGESTS_DIR,
        ]
    )
