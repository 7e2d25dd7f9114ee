"""What event clips cost a camera: the packet ring's memory and CPU per frame, and the time from an event to its
``clip.ready`` (the remux after the last packet; the clip itself waits ``post_s`` of live video first).

A 1080p H.264 stream at ``--bitrate`` (default 4 Mbit/s, a keyframe every ``--gop`` frames) is encoded once into
memory from FFmpeg's test pattern, then demuxed twice: bare, and through a ``ClipRecorder`` (the same tap the
decoder process uses), so the difference is the ring's cost per packet, without decoding (which is the same either
way). Clips are then cut around events in the same stream and written by the recorder's writer thread. Webhook
throughput is measured by the outputs' benchmark. JSON goes to stdout.

    python benchmarks/clips.py --seconds 30 --events 5
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Any

import av

if __package__ in (None, ""):  # run as a script: make the repository importable like `python -m benchmarks...`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from streamsrv.config.models import CameraConfig
from streamsrv.decode.recorder import ClipRecorder
from streamsrv.ipc.messages import ClipStatus, RecordRequest

FPS = 25


def encode(seconds: float, width: int, height: int, bitrate: int, gop: int) -> bytes:
    """An MP4 of FFmpeg's moving test pattern in memory, H.264 at ``bitrate``."""
    out = io.BytesIO()
    pattern = av.open(f"testsrc2=size={width}x{height}:rate={FPS}", format="lavfi")
    with av.open(out, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.bit_rate = bitrate
        stream.options = {"preset": "ultrafast", "g": str(gop), "keyint_min": str(gop), "sc_threshold": "0"}
        for i, frame in enumerate(pattern.decode(video=0)):
            if i >= seconds * FPS:
                break
            container.mux(stream.encode(frame.reformat(format="yuv420p")))
        container.mux(stream.encode(None))
    pattern.close()
    return out.getvalue()


def demux(data: bytes, recorder: ClipRecorder | None, requests: dict[int, list[RecordRequest]]) -> float:
    """CPU seconds to demux every packet (through the recorder's tap when given), asking for clips on the way."""
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        if recorder is not None:
            recorder.on_open(stream)
        started = time.process_time()
        for i, packet in enumerate(container.demux(stream)):
            if recorder is not None:
                recorder.on_packet(packet, 0.0)
                for req in requests.get(i, []):
                    recorder.request(req)
        return time.process_time() - started


def ring_only(data: bytes, cam: CameraConfig, clip_dir: Path) -> float:
    recorder = ClipRecorder(cam, clip_dir, lambda status: None)
    try:
        return demux(data, recorder, {})
    finally:
        recorder.close()


def measure(args: argparse.Namespace) -> dict[str, Any]:
    data = encode(args.seconds, args.width, args.height, args.bitrate, args.gop)
    packets = int(args.seconds * FPS)
    cam = CameraConfig.model_validate(
        {"id": "bench", "url": "x.mp4", "record": {"enabled": True, "pre_s": args.pre_s, "post_s": args.post_s}}
    )
    bare = min(demux(data, None, {}) for _ in range(3))

    reports: list[tuple[float, ClipStatus]] = []
    done = threading.Event()
    ends: dict[str, float] = {}  # event id -> when the packet that completes its clip was handed over

    def report(status: ClipStatus) -> None:
        reports.append((time.perf_counter(), status))
        if len(reports) == args.events:
            done.set()

    # Events spread over the stream after the first pre_s, each far enough from the next not to share a clip.
    span = args.pre_s + args.post_s + args.gop / FPS + 1
    first = args.pre_s + 1
    event_times = [first + k * span for k in range(args.events) if first + k * span + args.post_s < args.seconds - 1]
    requests = {
        round(t * FPS): [RecordRequest(f"{k:032x}", t, args.pre_s, args.post_s, 60.0)]
        for k, t in enumerate(event_times)
    }
    args.events = len(event_times)
    with tempfile.TemporaryDirectory() as clip_dir:
        with_ring = min(ring_only(data, cam, Path(clip_dir)) for _ in range(3))
        recorder = ClipRecorder(cam, Path(clip_dir), report)
        original_finish = recorder._finish

        def timed_finish(clip: Any) -> None:
            if clip is not None:
                ends[clip.event_ids[0]] = time.perf_counter()
            original_finish(clip)

        recorder._finish = timed_finish  # type: ignore[method-assign]
        tracemalloc.start()
        before = tracemalloc.take_snapshot()
        demux(data, recorder, requests)
        ring_bytes = recorder.ring.nbytes
        held = sum(s.size_diff for s in tracemalloc.take_snapshot().compare_to(before, "filename"))
        tracemalloc.stop()
        done.wait(120)
        recorder.close()
    latencies = sorted(at - ends[s.event_ids[0]] for at, s in reports if s.event_ids[0] in ends)
    sizes = [s.bytes for _, s in reports if s.state == "ready"]
    return {
        "stream": {
            "width": args.width,
            "height": args.height,
            "fps": FPS,
            "bitrate_bps": args.bitrate,
            "gop": args.gop,
        },
        "bytes_per_s": round(len(data) / args.seconds),
        "ring": {
            "pre_s": args.pre_s,
            "packet_bytes_held": ring_bytes,
            "python_bytes_held_incl_open_clips": held,
            "cpu_us_per_packet": round((with_ring - bare) / packets * 1e6, 1),
            "cpu_us_per_packet_demux_only": round(bare / packets * 1e6, 1),
        },
        "clips": {
            "events": args.events,
            "ready": len(sizes),
            "mean_bytes": round(sum(sizes) / len(sizes)) if sizes else 0,
            "write_ms_p50": round(latencies[len(latencies) // 2] * 1e3, 1) if latencies else None,
            "write_ms_max": round(latencies[-1] * 1e3, 1) if latencies else None,
            "event_to_clip_ready_s": f"post_s ({args.post_s}) + the event's inference delay + write_ms",
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--width", type=int, default=1920)
    parser.add_argument("--height", type=int, default=1080)
    parser.add_argument("--bitrate", type=int, default=4_000_000)
    parser.add_argument("--gop", type=int, default=50, help="frames between keyframes")
    parser.add_argument("--pre-s", type=float, default=5.0)
    parser.add_argument("--post-s", type=float, default=5.0)
    parser.add_argument("--events", type=int, default=2)
    print(json.dumps(measure(parser.parse_args(argv)), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
