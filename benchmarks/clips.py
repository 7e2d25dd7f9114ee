"""What event clips and their alerts cost: the packet ring's memory and CPU per camera, the time from an event to
its ``clip.ready``, and webhook throughput (issue 16's benchmark).

A 1080p H.264 stream at ``--bitrate`` (default 4 Mbit/s, a keyframe every ``--gop`` frames) is encoded once into
memory from FFmpeg's test pattern, then demuxed: bare, and through a ``ClipRecorder`` (the same tap the decoder
process uses), so the difference is the ring's cost per packet, without decoding (which is the same either way).
Clips are cut around events in the same stream and written by the recorder's writer thread: as fast as it goes
(the write after the last packet), and once more paced at the stream's real rate, as a camera delivers it, with
each record request arriving ``--inference-delay-s`` after its event's frame (the frame age of a live event): from
the event's frame to the clip's report is what a consumer waits for ``clip.ready``. Webhook throughput is
``benchmarks/webhooks.py``'s measurement, run here with ``--webhook-events`` (0 skips it). JSON goes to stdout.

    python benchmarks/clips.py --seconds 30 --events 2
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

from benchmarks import webhooks
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


def demux(
    data: bytes,
    recorder: ClipRecorder | None,
    requests: dict[int, list[RecordRequest]],
    handed: dict[int, float] | None = None,
) -> float:
    """CPU seconds to demux every packet (through the recorder's tap when given), asking for clips on the way. With
    ``handed``, packets are paced at the stream's rate and the wall time each is handed over is kept by index."""
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        if recorder is not None:
            recorder.on_open(stream)
        started = time.process_time()
        t0 = time.perf_counter()
        for i, packet in enumerate(container.demux(stream)):
            if handed is not None:
                time.sleep(max(0.0, t0 + i / FPS - time.perf_counter()))
                handed[i] = time.perf_counter()
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


def event_to_clip_ready(
    data: bytes, cam: CameraConfig, clip_dir: Path, event_times: list[float], delay_s: float
) -> list[float]:
    """Seconds from each event's frame to its clip's report, with the stream paced as a camera sends it and each
    record request arriving ``delay_s`` after its frame (the event's inference delay)."""
    reports: dict[str, float] = {}
    recorder = ClipRecorder(cam, clip_dir, lambda status: reports.setdefault(status.event_ids[0], time.perf_counter()))
    ids = [f"{k:032x}" for k in range(len(event_times))]
    requests: dict[int, list[RecordRequest]] = {}
    for event_id, t in zip(ids, event_times, strict=True):
        requests.setdefault(round((t + delay_s) * FPS), []).append(
            RecordRequest(event_id, t, cam.record.pre_s, cam.record.post_s, cam.record.max_clip_s)
        )
    handed: dict[int, float] = {}
    try:
        demux(data, recorder, requests, handed)
        deadline = time.monotonic() + 60
        while len(reports) < len(ids) and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        recorder.close()
    return [reports[i] - handed[round(t * FPS)] for i, t in zip(ids, event_times, strict=True) if i in reports]


def webhook_throughput(events: int) -> dict[str, Any]:
    """``benchmarks/webhooks.py``'s report for ``events`` events over 4 cameras, spool outbox, as fast as it goes."""
    with tempfile.TemporaryDirectory(prefix="streamsrv-clips-webhooks-") as tmp:
        report = webhooks.run(webhooks.parse_args(["--events", str(events), "--cameras", "4"]), Path(tmp))
    kept = {key: report[key] for key in ("outbox", "events", "delivered", "exactly_once", "latency_s")}
    return {**kept, "events_per_s": round(report["events_per_s"], 1)}


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
        ready_s = sorted(event_to_clip_ready(data, cam, Path(clip_dir), event_times, args.inference_delay_s))
    latencies = sorted(at - ends[s.event_ids[0]] for at, s in reports if s.event_ids[0] in ends)
    sizes = [s.bytes for _, s in reports if s.state == "ready"]
    cpu_us = (with_ring - bare) / packets * 1e6
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
            "cpu_us_per_packet": round(cpu_us, 1),
            "cpu_us_per_packet_demux_only": round(bare / packets * 1e6, 1),
            "cpu_share_of_a_core": round(cpu_us * FPS / 1e6, 5),  # at the stream's frame rate
        },
        "clips": {
            "events": args.events,
            "ready": len(sizes),
            "mean_bytes": round(sum(sizes) / len(sizes)) if sizes else 0,
            "write_ms_p50": round(latencies[len(latencies) // 2] * 1e3, 1) if latencies else None,
            "write_ms_max": round(latencies[-1] * 1e3, 1) if latencies else None,
            "inference_delay_s": args.inference_delay_s,
            # from the event's frame, the stream paced in real time: post_s, up to the packet after it, the write
            "event_to_clip_ready_s": [round(v, 3) for v in ready_s],
        },
        "webhooks": webhook_throughput(args.webhook_events) if args.webhook_events else None,
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
    parser.add_argument("--inference-delay-s", type=float, default=0.2, help="an event's frame age at its request")
    parser.add_argument("--webhook-events", type=int, default=1000, help="events for the webhook throughput; 0: skip")
    print(json.dumps(measure(parser.parse_args(argv)), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
