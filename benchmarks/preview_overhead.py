"""What watching a camera costs the pipeline: processed frames/s with 0 viewers, N MJPEG viewers and N WebRTC
viewers of one camera, in one run against the real server (`streamsrv serve` as a child process, the real model).

Every viewer phase sits between two idle phases (idle, MJPEG, idle, WebRTC, ... for ``--rounds`` rounds, then a
last idle one), and its change is measured against the mean of those two: the machine's speed drifts during a run
(by ±10 % here), and a drift that is linear over three phases cancels out. Each figure is the median over rounds.
The goal is at most 10 % less processed fps with 4 viewers.

The viewers run in this process, standing in for remote browsers whose work would not happen on the server:
MJPEG viewers count parts without decoding them, and the aiortc viewers receive, reassemble and count VP8 frames
without decoding them either (``--decode`` makes them decode, as aiortc normally does). This process runs at the
lowest CPU priority (the server, started before, keeps the normal one) and its CPU use is reported. On a machine
shared with other work the idle phases vary by themselves: compare the spread of the idle phases with the losses.

    python -m benchmarks.preview_overhead --seconds 30 --viewers 4 --out preview.json
"""

from __future__ import annotations

import argparse
import asyncio
import fractions
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file (python benchmarks/x.py): import from this checkout, as -m does
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiortc.rtcrtpreceiver
import av
import httpx
import psutil
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.codecs.base import Decoder
from aiortc.jitterbuffer import JitterFrame
from av.frame import Frame

from streamsrv.preview.webrtc import use_host_addresses

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("STREAMSRV_SHARED", REPO.parent / "shared"))
CAMERA = "bench"


def start_server(args: argparse.Namespace, workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    config = workdir / "streamsrv.yaml"
    config.write_text(
        f'model: {{path: "{args.model}", labels: {{Normal: person, Fall: person}}}}\n'
        f"inference: {{threads: {args.threads}}}\n"
        f"preview: {{fps: {args.preview_fps}, host_addresses: ['127.0.0.1']}}\n"
        "cameras:\n"
        f'  - {{id: {CAMERA}, url: "{args.clip}", loop: true, detect_fps: {args.detect_fps},\n'
        "      rules: {lines: [{name: mid, points: [[0, 0.55], [1, 0.55]], units: norm}],\n"
        "              zones: [{name: left, units: norm,\n"
        "                       polygon: [[0.1, 0.4], [0.35, 0.4], [0.35, 0.7], [0.1, 0.7]]}]}}\n"
    )
    port = free_port()
    log = (workdir / "server.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamsrv.cli", "serve", "--config", str(config), "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    return proc, f"http://127.0.0.1:{port}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"timed out waiting for {what}")


class Phase:
    """Counts viewer frames while a phase runs; measures the server over it."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.frames = 0
        self.lock = threading.Lock()
        self.stop = threading.Event()

    def add(self, n: int = 1) -> None:
        with self.lock:
            self.frames += n


class CountingDecoder(Decoder):
    """Turns each reassembled VP8 frame into a tiny blank frame: the viewer counts frames without decoding."""

    def decode(self, encoded_frame: JitterFrame) -> list[Frame]:
        frame = av.VideoFrame(2, 2, "yuv420p")
        frame.pts, frame.time_base = encoded_frame.timestamp, fractions.Fraction(1, 90_000)
        return [frame]


def mjpeg_viewer(url: str, phase: Phase) -> None:
    marker = b"--streamsrv-frame"
    with httpx.Client(timeout=30) as http, http.stream("GET", f"{url}/api/cameras/{CAMERA}/mjpeg") as response:
        tail = b""
        for chunk in response.iter_bytes():
            data = tail + chunk
            phase.add(data.count(marker))
            tail = data[-len(marker) + 1 :]
            if phase.stop.is_set():
                return


async def webrtc_viewers(url: str, n: int, phase: Phase) -> None:
    pcs: list[RTCPeerConnection] = []

    async def one() -> None:
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        pcs.append(pc)
        pc.addTransceiver("video", direction="recvonly")
        arrived: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        pc.on("track", lambda track: arrived.set_result(track))
        await pc.setLocalDescription(await pc.createOffer())
        async with httpx.AsyncClient(timeout=30) as http:
            r = await http.post(
                f"{url}/api/cameras/{CAMERA}/webrtc", json={"type": "offer", "sdp": pc.localDescription.sdp}
            )
            r.raise_for_status()
        await pc.setRemoteDescription(RTCSessionDescription(sdp=r.json()["sdp"], type="answer"))
        track = await asyncio.wait_for(arrived, 30)
        while not phase.stop.is_set():
            await asyncio.wait_for(track.recv(), 30)
            phase.add()

    try:
        await asyncio.gather(*(one() for _ in range(n)))
    finally:
        for pc in pcs:
            await pc.close()


def cpu_s(procs: list[psutil.Process]) -> float:
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += t.user + t.system
    return total


def measure(url: str, phase: Phase, seconds: float, settle_s: float, server: psutil.Process) -> dict[str, Any]:
    time.sleep(settle_s)  # viewers connected and the feed running before the clock starts
    me = psutil.Process()
    workers = server.children(recursive=True)  # decoder and inference processes
    with httpx.Client(timeout=30) as http:
        s0 = http.get(f"{url}/api/cameras/{CAMERA}/stats").json()
        f0, t0 = phase.frames, time.monotonic()
        c0, w0, m0 = cpu_s([server]), cpu_s(workers), cpu_s([me])
        time.sleep(seconds)
        s1 = http.get(f"{url}/api/cameras/{CAMERA}/stats").json()
        f1, t1 = phase.frames, time.monotonic()
        c1, w1, m1 = cpu_s([server]), cpu_s(workers), cpu_s([me])
        preview = http.get(f"{url}/api/preview/stats").json()
    dt = t1 - t0
    return {
        "phase": phase.name,
        "processed_fps": round((s1["frames_processed"] - s0["frames_processed"]) / dt, 3),
        "viewer_fps_total": round((f1 - f0) / dt, 2),
        "api_process_cpu_pct": round(100 * (c1 - c0) / dt, 1),
        "pipeline_processes_cpu_pct": round(100 * (w1 - w0) / dt, 1),
        "viewer_process_cpu_pct": round(100 * (m1 - m0) / dt, 1),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "preview": preview.get("cameras", {}).get(CAMERA),
    }


def run_phase(name: str, url: str, args: argparse.Namespace, server: psutil.Process) -> dict[str, Any]:
    phase = Phase(name)
    threads: list[threading.Thread] = []
    if name == "mjpeg":
        threads = [threading.Thread(target=mjpeg_viewer, args=(url, phase)) for _ in range(args.viewers)]
    elif name == "webrtc":
        threads = [threading.Thread(target=lambda: asyncio.run(webrtc_viewers(url, args.viewers, phase)))]
    for t in threads:
        t.start()
    try:
        return measure(url, phase, args.seconds, args.settle, server)
    finally:
        phase.stop.set()
        for t in threads:
            t.join(60)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clip", type=Path, default=SHARED / "media" / "concourse_720p.mp4")
    parser.add_argument("--model", type=Path, default=SHARED / "models" / "person_yolov8s.pt")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each measured phase")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of idle, MJPEG, idle, WebRTC phases")
    parser.add_argument("--settle", type=float, default=5.0, help="seconds after viewers join before measuring")
    parser.add_argument("--viewers", type=int, default=4)
    parser.add_argument("--detect-fps", type=float, default=10.0)
    parser.add_argument("--preview-fps", type=float, default=10.0)
    parser.add_argument("--threads", type=int, default=1, help="inference threads")
    parser.add_argument("--decode", action="store_true", help="WebRTC viewers decode the video they receive")
    parser.add_argument("--out", type=Path, help="write the results as JSON here too")
    args = parser.parse_args()
    if not args.decode:
        aiortc.rtcrtpreceiver.get_decoder = lambda codec: CountingDecoder()
    use_host_addresses(["127.0.0.1"])  # the aiortc clients here meet the server on loopback

    with tempfile.TemporaryDirectory(prefix="preview-bench-") as tmp:
        proc, url = start_server(args, Path(tmp))
        try:
            wait_until(lambda: proc.poll() is None and httpx.get(f"{url}/readyz").status_code == 200, 180, "ready")
            wait_until(
                lambda: httpx.get(f"{url}/api/cameras/{CAMERA}/stats").json()["processed_fps"] > 0, 60, "results"
            )
            server = psutil.Process(proc.pid)
            os.nice(19)  # the viewers stand in for remote browsers: they get what the server leaves over
            order = [*(["idle", "mjpeg", "idle", "webrtc"] * args.rounds), "idle"]
            results = []
            for i, name in enumerate(order, 1):
                results.append(run_phase(name, url, args, server))
                print(f"[{i}/{len(order)}] {name}: {results[-1]['processed_fps']:.2f} processed fps", file=sys.stderr)
        except BaseException:
            print((Path(tmp) / "server.log").read_text()[-3000:], file=sys.stderr)
            raise
        finally:
            stop_server(proc)

    def median(phase: str, key: str) -> float:
        return statistics.median(r[key] for r in results if r["phase"] == phase)

    def change_vs_neighbours(phase: str) -> float:
        """Median over rounds of a phase's fps against the mean of the idle phases just before and after it."""
        ratios = [
            r["processed_fps"] / ((results[i - 1]["processed_fps"] + results[i + 1]["processed_fps"]) / 2)
            for i, r in enumerate(results)
            if r["phase"] == phase
        ]
        return round(100 * (statistics.median(ratios) - 1), 1)

    baseline = median("idle", "processed_fps")
    table: list[dict[str, Any]] = []
    changes: dict[str, float] = {"idle": 0.0}
    print(
        f"{'phase':8} {'processed fps':>14} {'vs idle around it':>17} {'viewer fps':>11} {'API cpu %':>10} "
        f"{'pipeline cpu %':>15} {'viewers cpu %':>14}"
    )
    for phase in ("idle", "mjpeg", "webrtc"):
        row = {
            k: median(phase, k)
            for k in (
                "processed_fps",
                "viewer_fps_total",
                "api_process_cpu_pct",
                "pipeline_processes_cpu_pct",
                "viewer_process_cpu_pct",
            )
        }
        if phase != "idle":
            changes[phase] = change_vs_neighbours(phase)
        row["change_pct"] = changes[phase]
        table.append({"phase": phase, **row})
        print(
            f"{phase:8} {row['processed_fps']:14.2f} {row['change_pct']:+16.1f}% {row['viewer_fps_total']:11.1f} "
            f"{row['api_process_cpu_pct']:10.1f} {row['pipeline_processes_cpu_pct']:15.1f} "
            f"{row['viewer_process_cpu_pct']:14.1f}"
        )
    worst = min(changes["mjpeg"], changes["webrtc"])
    idle = [r["processed_fps"] for r in results if r["phase"] == "idle"]
    verdict = "meets" if worst >= -10 else "misses"
    print(
        f"worst loss with {args.viewers} viewers: {max(0.0, -worst):.1f} % ({verdict} the 10 % goal); "
        f"idle phases ranged {min(idle):.2f}..{max(idle):.2f} fps; load average {os.getloadavg()[0]:.1f} "
        f"on {os.cpu_count()} CPUs"
    )
    summary = {
        "args": {k: str(v) for k, v in vars(args).items()},
        "cpus": os.cpu_count(),
        "baseline_processed_fps": round(baseline, 3),
        "medians": table,
        "phases": results,
    }
    if args.out:
        args.out.write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
