"""Event clips in the decoder process: packets from the source into the ring, clips cut on request, and a writer
thread that remuxes each finished clip into an MP4 by stream copy, so the decode loop never waits for the disk.

The output stream is made from the input stream's codec parameters (``add_stream_from_template``), copied when the
source opens: a clip outlives its connection (a reconnect finishes the open clip first).
"""

from __future__ import annotations

import errno
import io
import logging
import os
import queue
import threading
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

from streamsrv.config.models import CameraConfig
from streamsrv.decode.packets import ClipCutter, CutClip, EncodedPacket, PacketRing
from streamsrv.ipc.messages import ClipStatus, RecordRequest

log = logging.getLogger(__name__)
# Records come after inference (the event is decided on a frame a moment old): the ring reaches back this much more.
_REQUEST_LAG_S = 3.0
# The disk is full or the directory cannot be written: the clip is skipped (counted), not a failure of the stream.
_DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS)
_TIME_BASE = Fraction(1, 90000)


class _Template:
    """The input stream's codec parameters, held in a stream of an output container never written."""

    def __init__(self, stream: Any) -> None:
        self._holder = av.open(io.BytesIO(), "w", format="mp4")
        self.stream = self._holder.add_stream_from_template(stream)
        self.codec = stream.codec_context.name  # the decoder's name: h264, hevc


class ClipRecorder:
    """One camera's recorder. ``on_open``/``on_packet`` run on the decode loop; ``report`` is called from the
    writer thread with each clip's outcome."""

    def __init__(self, cam: CameraConfig, clip_dir: Path, report: Callable[[ClipStatus], None]) -> None:
        self.cam = cam
        self.clip_dir = clip_dir
        self.report = report
        # requests are read between handed frames, so at a low detect_fps they wait up to a frame interval too
        self.ring = PacketRing(cam.record.pre_s + _REQUEST_LAG_S + 1.0 / cam.detect_fps)
        self.cutter = ClipCutter(self.ring)
        self._template: _Template | None = None
        self._jobs: queue.Queue[tuple[CutClip, _Template | None] | None] = queue.Queue()
        self._writer = threading.Thread(target=self._write_loop, name="clip-writer", daemon=True)
        self._writer.start()

    # -- the decode loop's side -----------------------------------------------------------------------------------
    def on_open(self, stream: Any) -> None:
        """A new connection: finish what the old one left open, and forget its packets (a new clock)."""
        self._finish(self.cutter.flush())
        self.ring.clear()
        self._template = _Template(stream)

    def on_packet(self, packet: Any, pts_offset: float) -> None:
        pts, dts = packet.pts, packet.dts
        if (pts is None and dts is None) or not packet.size or packet.time_base is None:
            return
        tb = packet.time_base
        pts_s = float((pts if pts is not None else dts) * tb) + pts_offset
        dts_s = float((dts if dts is not None else pts) * tb) + pts_offset
        kept = EncodedPacket(bytes(packet), pts_s, dts_s, float((packet.duration or 0) * tb), packet.is_keyframe)
        self.ring.add(kept)
        self._finish(self.cutter.add(kept))

    def request(self, req: RecordRequest) -> None:
        finished = self.cutter.request(
            req.event_id, req.video_ts, req.pre_s, req.post_s, req.max_clip_s, req.extend_only
        )
        for clip in finished:
            self._finish(clip)

    def close(self) -> None:
        """Write what is open and wait for the writer (the decoder stops)."""
        self._finish(self.cutter.flush())
        self._jobs.put(None)
        self._writer.join(timeout=30)

    def _finish(self, clip: CutClip | None) -> None:
        if clip is not None:
            self._jobs.put((clip, self._template))

    # -- the writer thread ----------------------------------------------------------------------------------------
    def _write_loop(self) -> None:
        while (job := self._jobs.get()) is not None:
            clip, template = job
            try:
                self.report(self._write(clip, template))
            except Exception:  # a broken clip must not end the writer: later ones may be fine
                log.exception("camera %s: writing a clip failed", self.cam.id)
                self.report(ClipStatus(self.cam.id, tuple(clip.event_ids), "failed", error="internal error"))

    def _write(self, clip: CutClip, template: _Template | None) -> ClipStatus:
        ids = tuple(clip.event_ids)
        if template is None or not clip.packets:
            return ClipStatus(self.cam.id, ids, "failed", error="no video held for the event (camera offline?)")
        path = self.clip_dir / self.cam.id / f"{ids[0]}.mp4"
        part = path.with_suffix(".part")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            _remux(clip, template, part)
            os.replace(part, path)
        except OSError as exc:
            part.unlink(missing_ok=True)
            state = "skipped" if exc.errno in _DISK_ERRNOS else "failed"
            return ClipStatus(self.cam.id, ids, state, error=f"{type(exc).__name__}: {exc.strerror or exc}")
        return ClipStatus(self.cam.id, ids, "ready", str(path), path.stat().st_size, round(clip.duration_s, 3))


def _remux(clip: CutClip, template: _Template, path: Path) -> None:
    """Write the clip's packets, as they are, into an MP4 whose time starts at its first packet."""
    t0 = min(p.dts_s for p in clip.packets)
    with av.open(str(path), "w", format="mp4", options={"movflags": "+faststart"}) as out:
        stream = out.add_stream_from_template(template.stream)
        stream.time_base = _TIME_BASE
        if template.codec == "hevc":  # Safari plays HEVC in MP4 only tagged hvc1 (FFmpeg's default is hev1)
            stream.codec_context.codec_tag = "hvc1"
        last_dts = -1
        for p in clip.packets:
            packet = av.Packet(p.data)
            packet.stream = stream
            packet.time_base = _TIME_BASE
            # A looping file's next pass starts with dts a frame or two below the last pass's end (B-frames):
            # the muxer needs them rising.
            dts = last_dts = max(round((p.dts_s - t0) / _TIME_BASE), last_dts + 1)
            packet.dts = dts
            packet.pts = max(round((p.pts_s - t0) / _TIME_BASE), dts)
            packet.duration = round(p.duration_s / _TIME_BASE)
            packet.is_keyframe = p.keyframe
            out.mux(packet)
