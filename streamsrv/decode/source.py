"""Open a camera with PyAV and yield decoded frames spaced to its ``detect_fps``.

Every packet is decoded (H.264 needs the reference frames), but only the frames that are due are
converted to BGR (a third as much again as decoding them at 720p), so skipped frames stay cheap.

A paced source (a live camera, a file played in real time) is never decoded late for ever: a decoder
that falls more than ``max_lag_s`` behind, on a CPU too busy to give it its share, drops packets up to
the next keyframe (counted in ``dropped_behind``) instead of letting a backlog grow.

Decoding runs on a hardware decoder (NVDEC, VA-API, Quick Sync) when the camera's ``hwaccel`` asks for
one and this FFmpeg build and machine have it; frames are then downloaded to memory before conversion.
Otherwise it runs on the CPU, and the reason is logged once per process. No torch or ultralytics here: decoder
processes must stay small. A ``PacketTap`` sees the packets before decoding (event clips).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import av
import av.error
import numpy as np
import numpy.typing as npt
from av.codec.hwaccel import HWAccel

from streamsrv.config.models import CameraConfig, redact_url
from streamsrv.decode.hwaccel import choose_hw_decoder
from streamsrv.decode.packets import PacketTap
from streamsrv.decode.protocols import ffmpeg_input
from streamsrv.errors import SourceError, SourceTimeout, SourceUnavailable

log = logging.getLogger(__name__)

# Errors after which retrying soon is unlikely to help; the camera shows ``error``, not ``reconnecting``.
_PERMANENT = (
    av.error.HTTPNotFoundError,
    av.error.HTTPUnauthorizedError,
    av.error.HTTPForbiddenError,
    av.error.FileNotFoundError,
    av.error.PermissionError,
    av.error.InvalidDataError,
    av.error.ProtocolNotFoundError,
)
_TIMEOUTS = (av.error.TimeoutError, av.error.ExitError)
# What hwaccel "auto" tries, in order. Cameras send H.264 or HEVC, so those are what a device is probed with.
# Timestamps are rounded to the stream's time base; 1 ms keeps 25 -> 5 fps at exactly every 5th frame.
_TS_TOLERANCE_S = 1e-3


@dataclass(frozen=True, slots=True)
class DecodedFrame:
    """A frame as the source hands it on: pixels, its index and its clocks (as in ``FrameRef``), taken together."""

    image: npt.NDArray[np.uint8]
    frame_index: int
    video_ts: float
    mono_ts: float
    wall_ts: float


class FrameSkipper:
    """Decides which frames to hand on so they are spaced ``1/fps`` apart by timestamp.

    After a gap (a stall, a reconnect) it restarts from the next frame instead of bursting.

    >>> s = FrameSkipper(fps=5)
    >>> [t for t in [i / 25 for i in range(26)] if s.due(t)]
    [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    """

    def __init__(self, fps: float) -> None:
        self.interval = 1.0 / fps
        self._next: float | None = None

    def due(self, ts: float) -> bool:
        nxt = self._next
        if nxt is not None and nxt - self.interval - _TS_TOLERANCE_S <= ts < nxt - _TS_TOLERANCE_S:
            return False
        if nxt is None or ts - nxt > self.interval or ts < nxt - self.interval:
            self._next = ts + self.interval  # first frame, a gap, or time ran backwards: restart the schedule
        else:
            self._next = nxt + self.interval
        return True

    def reset(self) -> None:
        self._next = None


class LagMeter:
    """How far behind real time a paced decoder is, from frame timestamps.

    The smallest ``now - pts`` seen is the source's own pace (a file's schedule, a live camera's clock);
    anything above it is time the decoder has fallen behind.

    >>> lag = LagMeter()
    >>> lag.update(pts_s=0.0, now=100.0), lag.update(pts_s=1.0, now=101.0), lag.update(pts_s=2.0, now=103.5)
    (0.0, 0.0, 1.5)
    """

    def __init__(self) -> None:
        self._offset: float | None = None

    def update(self, pts_s: float, now: float) -> float:
        offset = now - pts_s
        if self._offset is None or offset < self._offset:
            self._offset = offset
        return offset - self._offset


def classify_error(exc: BaseException, url: str) -> SourceError:
    """Turn a PyAV/OS error into our tree with a message that names the (redacted) source."""
    where = redact_url(url)
    if isinstance(exc, SourceError):
        return exc
    if isinstance(exc, _TIMEOUTS):
        return SourceTimeout(f"{where}: timed out ({type(exc).__name__})")
    if isinstance(exc, av.error.HTTPUnauthorizedError | av.error.HTTPForbiddenError):
        return SourceUnavailable(f"{where}: unauthorized (check the camera credentials)")
    if isinstance(exc, av.error.HTTPNotFoundError | av.error.FileNotFoundError | FileNotFoundError):
        return SourceUnavailable(f"{where}: not found")
    if isinstance(exc, av.error.InvalidDataError):
        return SourceUnavailable(f"{where}: not a readable video stream (invalid data)")
    if isinstance(exc, _PERMANENT):
        return SourceUnavailable(f"{where}: {exc}")
    if isinstance(exc, av.error.ConnectionRefusedError | ConnectionRefusedError):
        return SourceError(f"{where}: connection refused")
    return SourceError(f"{where}: {type(exc).__name__}: {exc}")


def is_permanent(err: SourceError) -> bool:
    return isinstance(err, SourceUnavailable)


def _is_file(url: str) -> bool:
    return "://" not in url or url.startswith("file://")


@dataclass(slots=True)
class _Position:
    """Where ``VideoSource.frames`` is in its stream, kept across a looping file's passes."""

    frame_dur: float  # assumed for frames without a timestamp
    last_frame_mono: float  # when a frame was last decoded (or dropped to catch up): the stall clock
    # A decoder that cannot keep up (a starved CPU) must not fall further behind for ever: past max_lag_s it
    # drops packets up to the next keyframe, which it can do without decoding them. None (an unpaced file, or
    # max_lag_s null): it never does.
    max_lag_s: float | None
    index: int = 0  # frames decoded or dropped so far
    pts_offset: float = 0.0  # added to a looping file's timestamps on each pass
    last_pts: float = 0.0
    start_mono: float | None = None  # monotonic time of pts 0 for a file played in real time
    catching_up: bool = False
    lag: LagMeter = field(default_factory=LagMeter)


class VideoSource:
    """One open connection to a camera. Use ``frames()``; it ends when the stream ends.

    >>> src = VideoSource(CameraConfig(id="c", url="clip.mp4", realtime=False))  # doctest: +SKIP
    >>> for f in src.frames(): ...  # doctest: +SKIP
    """

    def __init__(
        self, cam: CameraConfig, realtime: bool | None = None, skip: bool = True, tap: PacketTap | None = None
    ) -> None:
        self.cam, self.tap = cam, tap
        self.is_file = _is_file(cam.url) and not cam.url.startswith("/dev/video")
        self.realtime = cam.realtime if realtime is None else realtime
        self.skipper = FrameSkipper(cam.detect_fps) if skip else None
        self._container: Any = None
        self.codec = ""
        self.decoder = "cpu"  # or the hardware decoder in use: cuda, vaapi, qsv
        self.width = 0
        self.height = 0
        self.fps = 0.0
        self.frame_count = 0  # as the container declares it; 0 for live streams
        self.decoded = 0
        self.skipped = 0
        self.dropped_behind = 0  # frames not decoded: the decoder fell behind real time and caught up
        self.packets = 0

    def set_detect_fps(self, fps: float) -> None:
        """Pace handed frames to ``fps`` from now on (the server lowers it under overload, then restores it)."""
        if self.skipper is not None:
            self.skipper.interval = 1.0 / fps

    def open(self) -> None:
        cam = self.cam
        options: dict[str, str] = {}
        url, options["protocol_whitelist"] = ffmpeg_input(cam.url)  # a URL reaches nothing its scheme does not
        kwargs: dict[str, Any] = {"timeout": (cam.open_timeout_s, cam.read_timeout_s)}
        if url.startswith(("rtsp://", "rtsps://")):
            options["rtsp_transport"] = cam.rtsp_transport
            # FFmpeg's own socket timeout, in microseconds, also bounds the RTSP handshake
            options["timeout"] = str(int(cam.read_timeout_s * 1e6))
        if url.startswith("/dev/video"):
            kwargs["format"] = "v4l2"
        device_type = choose_hw_decoder(cam.hwaccel)
        started = time.monotonic()
        try:
            self._container = self._open(url, options, kwargs, device_type)
            stream = self._container.streams.video[0]
        except IndexError:
            self.close()
            raise SourceUnavailable(f"{redact_url(cam.url)}: has no video stream") from None
        except av.error.InvalidDataError as exc:
            self.close()
            # A server that accepts the connection and then says nothing makes FFmpeg give up with "invalid
            # data" once its timeout fires: that is a silent camera (retry), not a source that is not video.
            if time.monotonic() - started >= 0.8 * min(cam.open_timeout_s, cam.read_timeout_s):
                raise SourceTimeout(f"{redact_url(cam.url)}: no answer within {cam.open_timeout_s:g}s") from exc
            raise classify_error(exc, cam.url) from exc
        except Exception as exc:
            self.close()
            raise classify_error(exc, cam.url) from exc
        if device_type is not None and stream.codec_context.is_hwaccel:
            self.decoder = device_type
        else:
            # CPU threads help software decoding only; a hardware decoder has its own engine
            stream.codec_context.thread_count = cam.decode_threads
            if cam.decode_threads != 1:
                stream.thread_type = "AUTO"
        if cam.keyframes_only:
            stream.codec_context.skip_frame = "NONKEY"
        self.codec = stream.codec_context.name
        self.width, self.height = stream.codec_context.width, stream.codec_context.height
        rate = stream.average_rate or stream.guessed_rate
        self.fps = float(rate) if rate else 0.0
        self.frame_count = int(stream.frames or 0)
        if self.tap is not None:
            self.tap.on_open(stream)

    def _open(self, url: str, options: dict[str, str], kwargs: dict[str, Any], device_type: str | None) -> Any:
        """Open the source, decoding on ``device_type`` when given and it takes this stream."""
        if device_type is None:
            return av.open(url, options=options, **kwargs)
        where = redact_url(self.cam.url)
        try:
            hwaccel = HWAccel(device_type, allow_software_fallback=True)
            container = av.open(url, options=options, hwaccel=hwaccel, **kwargs)
        except Exception as hw_exc:  # the device probed fine but fails now (e.g. out of memory)
            container = av.open(url, options=options, **kwargs)  # a broken source raises its own error here
            log.warning("%s: cannot decode on %s (%s); decoding on the CPU", where, device_type, hw_exc)
            return container
        video = container.streams.video
        if video and not video[0].codec_context.is_hwaccel:
            codec = video[0].codec_context.name
            log.info("%s: %s has no %s decoder here; decoding on the CPU", where, codec, device_type)
        return container

    def _target_size(self, w: int, h: int) -> tuple[int, int] | None:
        scale = min(self.cam.max_width / w, self.cam.max_height / h)
        if scale >= 1:
            return None
        return max(2, int(w * scale) // 2 * 2), max(2, int(h * scale) // 2 * 2)

    def frames(self) -> Iterator[DecodedFrame]:
        """Decode until the stream ends (files: loop if configured); raises SourceError on failure."""
        if self._container is None:
            self.open()
        stream = self._container.streams.video[0]
        pos = _Position(
            frame_dur=1.0 / self.fps if self.fps else 0.04,
            last_frame_mono=time.monotonic(),
            max_lag_s=self.cam.max_lag_s if self.realtime else None,
        )
        while True:
            try:
                yield from self._decode_to_end(stream, pos)
            except SourceError:
                raise
            except Exception as exc:
                raise classify_error(exc, self.cam.url) from exc
            if not (self.is_file and self.cam.loop):
                return
            self._rewind(pos)

    def _decode_to_end(self, stream: Any, pos: _Position) -> Iterator[DecodedFrame]:
        """Demux the stream to its end: each packet dropped (catching up) or decoded, the due frames handed on."""
        for packet in self._container.demux(stream):
            self.packets += 1
            if self.tap is not None:
                self.tap.on_packet(packet, pos.pts_offset)
            if self._drop_to_catch_up(packet, pos):
                continue
            for frame in packet.decode():
                pts, now = self._timestamp(frame, pos)
                if self.realtime and self.is_file:
                    self._pace(pts, now, pos)
                self._check_lag(pts, pos)
                if self.skipper is not None and not self.skipper.due(pts):
                    self.skipped += 1
                    continue
                yield DecodedFrame(self._to_bgr(frame), pos.index - 1, pts, time.monotonic(), time.time())
                # time the consumer held the frame (offline analysis waiting on a slow detector) is not a stall
                pos.last_frame_mono = time.monotonic()
            self._check_stall(pos)

    def _drop_to_catch_up(self, packet: Any, pos: _Position) -> bool:
        """Whether to drop ``packet`` undecoded: the decoder fell behind and is skipping to the next keyframe."""
        if pos.catching_up and packet.is_keyframe:
            pos.catching_up = False
        if not pos.catching_up:
            return False
        if packet.size:
            self.dropped_behind += 1
            pos.index += 1
        pos.last_frame_mono = time.monotonic()
        return True

    def _timestamp(self, frame: Any, pos: _Position) -> tuple[float, float]:
        """Count a decoded frame; its pts in seconds (continuing across a file's loops) and when it was decoded."""
        now = time.monotonic()
        pos.last_frame_mono = now
        self.decoded += 1
        pts = pos.pts_offset + (float(frame.time) if frame.time is not None else pos.index * pos.frame_dur)
        pos.last_pts = pts
        pos.index += 1
        return pts, now

    @staticmethod
    def _pace(pts: float, now: float, pos: _Position) -> None:
        """Sleep until the frame at ``pts`` is due, so a file plays at its native rate like a live camera."""
        if pos.start_mono is None:
            pos.start_mono = now - pts
        delay = pos.start_mono + pts - now
        if delay > 0:
            time.sleep(delay)

    @staticmethod
    def _check_lag(pts: float, pos: _Position) -> None:
        """Start catching up when the decoder is more than ``max_lag_s`` behind real time."""
        if pos.max_lag_s is not None and pos.lag.update(pts, time.monotonic()) > pos.max_lag_s:
            pos.catching_up = True

    def _to_bgr(self, frame: Any) -> npt.NDArray[np.uint8]:
        """The frame as a BGR array, downscaled to fit ``max_width`` x ``max_height``."""
        size = self._target_size(frame.width, frame.height)
        if size is None:
            return frame.to_ndarray(format="bgr24")
        return frame.reformat(width=size[0], height=size[1], format="bgr24").to_ndarray()

    def _check_stall(self, pos: _Position) -> None:
        """Raise SourceTimeout when packets keep coming but no frame has for ``stall_timeout_s``."""
        if time.monotonic() - pos.last_frame_mono > self.cam.stall_timeout_s:
            raise SourceTimeout(
                f"{redact_url(self.cam.url)}: stalled: packets but no frame for {self.cam.stall_timeout_s:g}s"
            )

    def _rewind(self, pos: _Position) -> None:
        """Start a looping file again; its timestamps continue from the last frame's."""
        self._container.seek(0)
        pos.pts_offset = pos.last_pts + pos.frame_dur

    def close(self) -> None:
        if self._container is not None:
            try:
                self._container.close()
            except Exception:  # closing a broken connection must never mask the original error
                log.debug("error closing %s", redact_url(self.cam.url), exc_info=True)
            self._container = None
