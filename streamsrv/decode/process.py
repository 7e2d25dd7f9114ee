"""The decoder process: one per camera, owns the connection and its reconnect state machine.

States: ``starting`` until the first frame, ``online`` while frames flow, ``reconnecting`` after a
drop (refused, timeout, stall, live stream ended), ``error`` when the source looks permanently
wrong (not found, unauthorized, not video) — it keeps retrying at the capped delay, since cameras
do come back — and ``offline`` when a file ends without ``loop``.

Frames go to the camera's shared-memory ring; state changes go to the supervisor on a pipe, and so do clip
outcomes. With ``record.enabled`` the encoded packets also go to a ``ClipRecorder``; record requests come on the
commands pipe and are read between frames.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path
from types import FrameType

from setproctitle import setproctitle

from streamsrv.config.models import CameraConfig
from streamsrv.decode.backoff import Backoff
from streamsrv.decode.motion import MotionGate
from streamsrv.decode.recorder import ClipRecorder
from streamsrv.decode.source import DecodedFrame, VideoSource, is_permanent
from streamsrv.errors import SourceError
from streamsrv.ipc.frame_ring import FrameRing
from streamsrv.ipc.messages import ClipStatus, DecoderStatus, RecordRequest
from streamsrv.ipc.signals import FramesReady, StopFlag, exit_with_parent
from streamsrv.types import CameraState

log = logging.getLogger(__name__)
_SLEEP_SLICE_S = 0.2
# VideoSource counters copied into the ring header under the same names.
_SOURCE_COUNTERS = ("decoded", "skipped", "dropped_behind", "packets")


class _Decoder:
    def __init__(
        self,
        cam: CameraConfig,
        ring: FrameRing,
        frames_ready: FramesReady,
        status: Connection,
        stop: StopFlag,
        commands: Connection | None = None,
        clip_dir: Path | None = None,
    ) -> None:
        self.cam, self.ring, self.frames_ready, self.status, self.stop = cam, ring, frames_ready, status, stop
        self.commands = commands
        self.backoff = Backoff(cam.reconnect)
        self.gate = MotionGate(cam.motion)
        self.state: CameraState | None = None
        self._send_lock = threading.Lock()  # the clip writer thread reports on the same pipe
        self.recorder = ClipRecorder(cam, clip_dir, self._send) if cam.record.enabled and clip_dir is not None else None

    def _send(self, msg: DecoderStatus | ClipStatus) -> None:
        with self._send_lock:
            self.status.send(msg)

    def take_commands(self) -> None:
        """Hand the record requests waiting on the commands pipe to the recorder (those without one fail)."""
        while self.commands is not None and self.commands.poll():
            req: RecordRequest = self.commands.recv()
            if self.recorder is not None:
                self.recorder.request(req)
            else:
                self._send(ClipStatus(self.cam.id, (req.event_id,), "failed", error="recording is off"))

    def report(self, state: CameraState, error: str | None = None, src: VideoSource | None = None) -> None:
        if state == self.state and error is None:
            return
        self.state = state
        extra: dict[str, object] = {}
        if src:
            extra = dict(codec=src.codec, width=src.width, height=src.height, source_fps=src.fps, decoder=src.decoder)
        self._send(DecoderStatus(self.cam.id, state, error, ts=time.time(), **extra))  # type: ignore[arg-type]

    def beat(self) -> None:
        self.ring.set_time("heartbeat_mono", time.monotonic())

    def run(self) -> None:
        self.report(CameraState.STARTING)
        while not self.stop.is_set():
            self.beat()
            src = VideoSource(self.cam, tap=self.recorder)
            try:
                ended = self._stream(src)
            except SourceError as exc:
                state = CameraState.ERROR if is_permanent(exc) else CameraState.RECONNECTING
                self.report(state, str(exc))
            else:
                if self.stop.is_set():
                    break
                if ended and src.is_file and not self.cam.loop:
                    self.report(CameraState.OFFLINE, "end of file")
                    return
                self.report(CameraState.RECONNECTING, "stream ended")
            finally:
                src.close()
            self.ring.add("reconnects")
            self._sleep(self.backoff.next_delay())

    def _stream(self, src: VideoSource) -> bool:
        """Read frames into the ring; True when the stream ended by itself."""
        ring = self.ring
        src.open()
        copied = dict.fromkeys(_SOURCE_COUNTERS, 0)
        for frame in src.frames():
            if self.state != CameraState.ONLINE:
                self.report(CameraState.ONLINE, src=src)
                self.backoff.reset()
            if self.gate.check(frame.image, frame.mono_ts):
                self._hand_on(frame)
            else:
                ring.add("skipped_no_motion")
            # counters are deltas so a reconnect (new VideoSource) keeps the totals rising
            for name in _SOURCE_COUNTERS:
                value = getattr(src, name)
                ring.add(name, value - copied[name])
                copied[name] = value
            ring.set_time("last_frame_mono", frame.mono_ts)
            src.set_detect_fps(ring.time_value("fps_limit") or self.cam.detect_fps)
            self.take_commands()
            self.beat()
            if self.stop.is_set():
                return False
        return True

    def _hand_on(self, frame: DecodedFrame) -> None:
        self.ring.write(
            frame.image,
            frame_index=frame.frame_index,
            wall_ts=frame.wall_ts,
            mono_ts=frame.mono_ts,
            video_ts=frame.video_ts,
            motion=self.gate.last_boxes,  # the preview's motion layer
        )
        self.frames_ready.notify()

    def _sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self.stop.is_set() and (left := deadline - time.monotonic()) > 0:
            self.beat()
            self.take_commands()
            time.sleep(min(_SLEEP_SLICE_S, left))


def run_decoder(
    cam_json: str,
    ring_path: str,
    frames_ready: FramesReady,
    status: Connection,
    stop: StopFlag,
    niceness: int,
    commands: Connection | None = None,
    clip_dir: str | None = None,
) -> None:
    """Process entry point. The camera comes as JSON so the child needs no pickled pydantic state."""
    cam = CameraConfig.model_validate_json(cam_json)
    setproctitle(f"streamsrv: decoder {cam.id}")  # not `python -c from multiprocessing.spawn ...` in `ps`

    def on_term(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor decides when decoders stop
    exit_with_parent()
    # Under CPU contention the model should win. Its threads meet at a barrier after every layer, so a
    # decoder that preempts one of them stalls them all; at a high niceness decoders run in the gaps the
    # model leaves (its serial parts, uneven layers), which on a loaded CPU are plenty for decoding.
    os.nice(niceness)
    ring = FrameRing.attach(ring_path, writable=True)
    decoder = _Decoder(cam, ring, frames_ready, status, stop, commands, Path(clip_dir) if clip_dir else None)
    try:
        decoder.run()
    finally:
        if decoder.recorder is not None:
            decoder.recorder.close()
        ring.close()
        status.close()
