"""INT8 post-training quantization of the OpenVINO IR with NNCF, calibrated on the operator's own video.

INT8 needs activation ranges, so it is calibrated on frames like the ones it will see: a recording
from the cameras (or a folder of their snapshots), letterboxed exactly as the detector does. The
detection head (box regression, DFL and scores) stays fp32, as in ultralytics' own INT8 export:
quantizing it moves boxes by several pixels.

INT8 is close to fp32, not equal: on the sample clip ~98% of boxes match torch fp32 at IoU >= 0.9,
and a frame may gain or lose a few low-confidence boxes. It pays most on CPUs with VNNI/AMX.

Example:
    >>> calibration = Calibration(Path("lobby_recording.mp4"), frames=200, imgsz=640)  # doctest: +SKIP
    >>> calibration.key()  # doctest: +SKIP
    'int8-3f2a9c0d41b7-n200-640'
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import av
import cv2
import numpy as np
import numpy.typing as npt

from streamsrv.errors import ModelError
from streamsrv.infer.digest import file_sha256
from streamsrv.infer.letterbox import letterbox_batch, to_network_input

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp"})
Frame = npt.NDArray[np.uint8]


@dataclass(frozen=True, slots=True)
class Calibration:
    """The frames an INT8 model is calibrated on: ``frames`` of ``source`` spread evenly, letterboxed to ``imgsz``.

    ``source`` is a video file or a folder of images; its content (not its name) is part of the cache key.
    """

    source: Path
    frames: int
    imgsz: int

    def key(self, memo_dir: Path | None = None) -> str:
        """Names the calibration by content; ``memo_dir`` remembers file digests (see streamsrv.infer.digest)."""
        return f"int8-{source_digest(self.source, memo_dir)[:12]}-n{self.frames}-{self.imgsz}"


def source_digest(source: Path, memo_dir: Path | None = None) -> str:
    """sha256 of a video file, or of a folder's images (names and contents, in name order)."""
    if source.is_file():
        return file_sha256(source, memo_dir)
    digest = hashlib.sha256()
    for image in image_files(source):
        digest.update(f"{image.name}:{file_sha256(image, memo_dir)}\n".encode())
    return digest.hexdigest()


def image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def read_calibration_frames(source: Path, count: int) -> list[Frame]:
    """Up to ``count`` BGR frames spread evenly over ``source``; raises ModelError when it holds none."""
    where = "inference.calibration"
    if source.is_dir():
        files = image_files(source)
        if not files:
            raise ModelError(f"{where}: folder {str(source)!r} has no {'/'.join(sorted(IMAGE_SUFFIXES))} images")
        frames = []
        for path in _spread(files, count):
            image = cv2.imread(str(path))
            if image is None:
                raise ModelError(f"{where}: cannot read image {str(path)!r}")
            frames.append(np.asarray(image, dtype=np.uint8))
        return frames
    if not source.is_file():
        raise ModelError(f"{where}: {str(source)!r} is neither a video file nor a folder of images")
    return _video_frames(source, count, where)


def _video_frames(source: Path, count: int, where: str) -> list[Frame]:
    """Decoded with PyAV, the cameras' own decoder, so calibration reads whatever a file camera can."""
    frames: list[Frame] = []
    try:
        with av.open(str(source)) as container:
            if not container.streams.video:
                raise ModelError(f"{where}: {str(source)!r} has no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            # a stream without a frame count is read from its start, every frame
            step = max(1, stream.frames // count) if stream.frames > 0 else 1
            for index, frame in enumerate(container.decode(stream)):
                if index % step == 0:  # only the frames kept are converted to BGR
                    frames.append(np.asarray(frame.to_ndarray(format="bgr24"), dtype=np.uint8))
                    if len(frames) == count:
                        break
    except av.FFmpegError as exc:
        raise ModelError(f"{where}: no video frames could be decoded from {str(source)!r}: {exc}") from exc
    if not frames:
        raise ModelError(f"{where}: no video frames could be decoded from {str(source)!r}")
    return frames


def _spread(items: list[Path], count: int) -> list[Path]:
    """``count`` items evenly spaced over ``items`` (all of them when there are fewer)."""
    if len(items) <= count:
        return items
    return [items[i] for i in np.linspace(0, len(items) - 1, count).round().astype(int)]


def head_scope(op_names_and_types: list[tuple[str, str]]) -> str:
    """The name prefix of the detection head: the scope of the network's last Sigmoid (the class scores).

    >>> head_scope([("/model.9/cv1/conv/Conv", "Convolution"), ("/model.22/Sigmoid", "Sigmoid")])
    '/model.22/'
    """
    sigmoids = [name for name, kind in op_names_and_types if kind == "Sigmoid"]
    if not sigmoids or "/" not in sigmoids[-1]:
        raise ModelError("cannot find the YOLO detection head (no scoped Sigmoid) to keep it out of INT8")
    return sigmoids[-1].rsplit("/", 1)[0] + "/"


def quantize_openvino(fp32_xml: Path, out_xml: Path, calibration: Calibration) -> None:
    """Write an INT8 copy of the fp32 IR ``fp32_xml`` to ``out_xml``, calibrated on ``calibration``'s frames."""
    import nncf  # export_model has checked that nncf and openvino are installed
    import openvino as ov

    frames = read_calibration_frames(calibration.source, calibration.frames)
    model = ov.Core().read_model(str(fp32_xml))
    ops = [(op.get_friendly_name(), op.get_type_name()) for op in model.get_ordered_ops()]
    head = head_scope(ops)
    logger.info(
        "calibrating INT8 on %d frames of %s at %d px (head %s stays fp32); progress follows",
        len(frames),
        calibration.source,
        calibration.imgsz,
        head,
    )

    def network_input(frame: Frame) -> npt.NDArray[np.float32]:
        return to_network_input(letterbox_batch([frame], calibration.imgsz).images)

    # nncf logs every op it leaves in fp32 at INFO; its progress bars are not logging and still show
    nncf.set_log_level(logging.WARNING)
    try:
        quantized = nncf.quantize(
            model,
            nncf.Dataset(frames, network_input),
            preset=nncf.QuantizationPreset.MIXED,
            subset_size=len(frames),
            ignored_scope=nncf.IgnoredScope(names=[name for name, _ in ops if name.startswith(head)]),
        )
        ov.save_model(quantized, str(out_xml), compress_to_fp16=False)
    except Exception as exc:  # nncf and openvino raise their own error types from deep inside
        raise ModelError(f"cannot quantize {str(fp32_xml)!r} to INT8: {exc}") from exc
