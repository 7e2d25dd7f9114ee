"""A local RTSP "camera" server for tests, built on GStreamer's GstRtspServer.

Run it with Debian's interpreter (`/usr/bin/python3`): PyGObject comes from the `python3-gi` package and cannot be
imported from the project's virtualenv.

    /usr/bin/python3 tests/support/rtsp_server.py --port 8554 \
        --mount cam360=../shared/media/concourse_360p.mp4 --synthetic test=640x360@15

Mount kinds:
- `--mount NAME=CLIP.mp4` loops the clip's H.264 or H.265 access units forever with synthetic timestamps. The clip is
  parsed once at start-up and never re-encoded, so a camera costs almost no CPU. The clip must have no B-frames
  (decode order == presentation order, so one increasing timestamp per access unit is valid).
- `--synthetic NAME=WxH@FPS` encodes a moving test pattern live (`videotestsrc ! x264enc`), for sizes and rates that
  no clip has.

Every mount is shared: all readers of a mount see the same stream, joining it mid-way like a real camera.
Prints `READY <port>` on stdout once serving, then serves until killed.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402

# The clip's codec (its caps in the MP4) -> the parser and RTP payloader for it
_CODECS = {"video/x-h264": ("h264parse", "rtph264pay"), "video/x-h265": ("h265parse", "rtph265pay")}


def payloader(caps_name: str) -> str:
    parse, pay = _CODECS[caps_name]
    return f"{parse} ! {pay} name=pay0 pt=96 config-interval=1"


@dataclass(frozen=True)
class Clip:
    caps: Gst.Caps
    frame_ns: int
    access_units: list[tuple[bytes, bool]]  # (Annex-B bytes, is a keyframe)

    @property
    def caps_name(self) -> str:
        return str(self.caps.get_structure(0).get_name())


def clip_codec(path: Path) -> str:
    """The caps name of the clip's video (video/x-h264 or video/x-h265)."""
    pipeline = Gst.parse_launch("filesrc name=src ! qtdemux ! appsink name=sink sync=false")
    pipeline.get_by_name("src").set_property("location", str(path))
    pipeline.set_state(Gst.State.PLAYING)
    try:
        sample = pipeline.get_by_name("sink").emit("try-pull-sample", 5 * Gst.SECOND)
    finally:
        pipeline.set_state(Gst.State.NULL)
    name = sample.get_caps().get_structure(0).get_name() if sample is not None else None
    if name not in _CODECS:
        raise RuntimeError(f"{path}: no H.264 or H.265 video found ({name})")
    return str(name)


def load_clip(path: Path) -> Clip:
    """Demux the clip into byte-stream access units, with the parameter sets before every keyframe so any loop point
    decodes."""
    codec = clip_codec(path)
    parse = _CODECS[codec][0]
    pipeline = Gst.parse_launch(
        f"filesrc name=src ! qtdemux ! {parse} config-interval=-1 "
        f"! {codec},stream-format=byte-stream,alignment=au ! appsink name=sink sync=false"
    )
    pipeline.get_by_name("src").set_property("location", str(path))
    sink = pipeline.get_by_name("sink")
    bus = pipeline.get_bus()
    pipeline.set_state(Gst.State.PLAYING)
    access_units: list[tuple[bytes, bool]] = []
    caps: Gst.Caps | None = None
    try:
        while True:
            # try-pull-sample rather than pull-sample: on a demux error appsink never sees EOS and would block forever.
            sample = sink.emit("try-pull-sample", 5 * Gst.SECOND)
            if sample is None:
                error = bus.pop_filtered(Gst.MessageType.ERROR)
                if error is not None:
                    raise RuntimeError(f"{path}: {error.parse_error()[0].message}")
                if sink.get_property("eos"):
                    break
                raise RuntimeError(f"{path}: demuxing stalled")
            caps = sample.get_caps()
            buffer = sample.get_buffer()
            keyframe = not buffer.has_flags(Gst.BufferFlags.DELTA_UNIT)
            access_units.append((buffer.extract_dup(0, buffer.get_size()), keyframe))
    finally:
        pipeline.set_state(Gst.State.NULL)
    if caps is None or not access_units:
        raise RuntimeError(f"{path}: no video found")
    ok, num, den = caps.get_structure(0).get_fraction("framerate")
    if not ok or num <= 0:
        raise RuntimeError(f"{path}: no frame rate in {caps.to_string()}")
    return Clip(caps=caps, frame_ns=Gst.SECOND * den // num, access_units=access_units)


class LoopFactory(GstRtspServer.RTSPMediaFactory):
    """Serves one clip in an endless loop; each new pipeline starts at the clip's first keyframe."""

    def __init__(self, clip: Clip) -> None:
        super().__init__()
        self._clip = clip
        # Not live: the server's sinks pace the stream by the buffer timestamps, so the feeder can push on demand.
        self.set_launch(f"( appsrc name=src format=time is-live=false ! {payloader(clip.caps_name)} )")
        self.set_shared(True)
        self.connect("media-configure", self._on_media_configure)

    def _on_media_configure(self, _factory: LoopFactory, media: GstRtspServer.RTSPMedia) -> None:
        appsrc = media.get_element().get_child_by_name("src")
        appsrc.set_property("caps", self._clip.caps)
        # One counter per media: a pipeline rebuilt after all readers left starts again from frame 0.
        appsrc.connect("need-data", self._on_need_data, [0])

    def _on_need_data(self, appsrc: Gst.Element, _length: int, counter: list[int]) -> None:
        index = counter[0]
        data, keyframe = self._clip.access_units[index % len(self._clip.access_units)]
        buffer = Gst.Buffer.new_wrapped(data)
        buffer.pts = buffer.dts = index * self._clip.frame_ns
        buffer.duration = self._clip.frame_ns
        if not keyframe:
            buffer.set_flags(Gst.BufferFlags.DELTA_UNIT)
        counter[0] = index + 1
        appsrc.emit("push-buffer", buffer)


def synthetic_factory(width: int, height: int, fps: int) -> GstRtspServer.RTSPMediaFactory:
    factory = GstRtspServer.RTSPMediaFactory()
    # A moving pattern so consumers that compare frames see change; a keyframe every second so late joiners start fast.
    factory.set_launch(
        f"( videotestsrc is-live=true pattern=ball ! video/x-raw,width={width},height={height},framerate={fps}/1 "
        f"! x264enc tune=zerolatency speed-preset=ultrafast bframes=0 key-int-max={fps} ! {payloader('video/x-h264')} )"
    )
    factory.set_shared(True)
    return factory


def _name_value(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not re.fullmatch(r"[A-Za-z0-9_-]+", name) or not value:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE with NAME in [A-Za-z0-9_-], got {text!r}")
    return name, value


def _synthetic_spec(text: str) -> tuple[str, tuple[int, int, int]]:
    name, spec = _name_value(text)
    match = re.fullmatch(r"(\d+)x(\d+)@(\d+)", spec)
    if not match:
        raise argparse.ArgumentTypeError(f"expected NAME=WxH@FPS, got {text!r}")
    width, height, fps = (int(group) for group in match.groups())
    return name, (width, height, fps)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=8554, help="0 picks a free port (printed in the READY line)")
    parser.add_argument("--mount", type=_name_value, action="append", default=[], metavar="NAME=CLIP")
    parser.add_argument("--synthetic", type=_synthetic_spec, action="append", default=[], metavar="NAME=WxH@FPS")
    args = parser.parse_args()
    names = [name for name, _ in args.mount + args.synthetic]
    if not names:
        parser.error("give at least one --mount or --synthetic")
    if len(set(names)) != len(names):
        parser.error(f"duplicate mount names: {names}")

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    # Unbounded pool: with a bounded one a reader's DESCRIBE can deadlock behind a busy client thread.
    server.get_thread_pool().set_max_threads(-1)
    mounts = server.get_mount_points()
    for name, path in args.mount:
        try:
            clip = load_clip(Path(path))
        except RuntimeError as exc:
            print(f"rtsp_server: {exc}", file=sys.stderr)
            return 2
        mounts.add_factory(f"/{name}", LoopFactory(clip))
    for name, (width, height, fps) in args.synthetic:
        mounts.add_factory(f"/{name}", synthetic_factory(width, height, fps))

    if server.attach(None) == 0:
        print(f"rtsp_server: cannot listen on 127.0.0.1:{args.port}", file=sys.stderr)
        return 2
    print(f"READY {server.get_bound_port()}", flush=True)
    GLib.MainLoop().run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
