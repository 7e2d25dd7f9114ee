"""On-demand load: N concurrent clients posting images and clips to ``streamsrv serve`` while K live cameras run.

It starts ``streamsrv serve`` with K looping file cameras (the clip, paced in real time, ``--camera-fps`` each),
waits for them to process, measures their processed fps for ``--baseline`` seconds, then runs N clients for
``--seconds``: each sends, one request after another, an image to ``POST /api/detect`` or (a ``--clip-share`` of
the time) the clip to ``POST /api/jobs`` (with ``--job-fps``), and follows its accepted jobs to the end. It reports:

- per kind (``detect``, ``job``): requests, requests/s, status counts, the 429 rate, latency p50/p95 of every
  answer and of the accepted ones, and errors (anything but 2xx and 429);
- jobs: accepted, done, failed, and turnaround p50/p95 (submit to done) of those that finished in the window
  (jobs still queued or running at the end are counted, not timed);
- live cameras: processed fps per camera before and during the load, and their ratio (goal: at least
  ``LIVE_FPS_RATIO_GOAL``; exit status 1 below it).

    python -m benchmarks.jobs_load --clients 8 --cameras 2 --seconds 60 --out jobs_load.json
    python -m benchmarks.jobs_load --clients 4 --cameras 1 --seconds 15 --baseline 8   # a short run

The JSON report goes to ``--out`` and a summary table to stdout; progress to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file (python benchmarks/x.py): import from this checkout, as -m does
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
import ultralytics

from tests.support.app_server import AppServer

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("STREAMSRV_SHARED", REPO.parent / "shared"))
DEFAULT_MODEL = SHARED / "models" / "person_yolov8s.pt"
DEFAULT_CLIP = SHARED / "media" / "concourse_360p.mp4"
DEFAULT_IMAGE = Path(ultralytics.__file__).parent / "assets" / "bus.jpg"
_POLL_S = 0.5
# Jobs run at lower priority than live cameras: while they do, each camera keeps at least this share of its
# processed fps. A measurement on a quiet machine, so here rather than in the test suite.
LIVE_FPS_RATIO_GOAL = 0.8


@dataclass
class Sample:
    kind: str  # detect | job
    status: int  # 0: no answer (connection error, timeout)
    latency_s: float


@dataclass
class Load:
    samples: list[Sample] = field(default_factory=list)
    turnaround_s: list[float] = field(default_factory=list)
    job_states: Counter[str] = field(default_factory=Counter)


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))], 4)


def write_config(path: Path, args: argparse.Namespace) -> None:
    cameras = "".join(
        f'  - {{id: cam{i}, url: "{args.clip}", detect_fps: {args.camera_fps}, loop: true}}\n'
        for i in range(args.cameras)
    )
    path.write_text(
        f'model: {{path: "{args.model}", labels: {{Normal: person, Fall: person}}}}\n'
        f"inference: {{threads: {args.threads}, max_batch: {args.max_batch}}}\n"
        "server: {log_level: warning}\n"
        + f"jobs: {{max_concurrent: {args.max_concurrent}, max_queued: {args.max_queued}, "
        f"max_detect_inflight: {args.max_detect_inflight}}}\n" + ("cameras:\n" + cameras if cameras else "")
    )


def processed(http: httpx.Client, cameras: list[str]) -> dict[str, int]:
    return {c: int(http.get(f"/api/cameras/{c}/stats").json()["frames_processed"]) for c in cameras}


def camera_fps(before: dict[str, int], after: dict[str, int], seconds: float) -> dict[str, float]:
    return {c: round((after[c] - before[c]) / seconds, 3) for c in before}


async def follow_job(client: httpx.AsyncClient, job_id: str, submitted: float, deadline: float, load: Load) -> None:
    while time.monotonic() < deadline:
        await asyncio.sleep(_POLL_S)
        try:
            state = (await client.get(f"/api/jobs/{job_id}", params={"records": "false"})).json()["job"]["state"]
        except (httpx.HTTPError, KeyError, ValueError):
            continue
        if state in ("done", "failed"):
            load.job_states[state] += 1
            if state == "done":
                load.turnaround_s.append(time.monotonic() - submitted)
            return
    load.job_states["unfinished"] += 1


async def client_loop(
    client: httpx.AsyncClient, args: argparse.Namespace, image: bytes, clip: bytes, end: float, load: Load, seed: int
) -> None:
    rng = random.Random(seed)
    followers: list[asyncio.Task[None]] = []
    while time.monotonic() < end:
        kind = "job" if rng.random() < args.clip_share else "detect"
        started = time.monotonic()
        response: httpx.Response | None = None
        try:
            if kind == "job":
                response = await client.post(
                    "/api/jobs",
                    files={"file": (args.clip.name, clip, "video/mp4")},
                    data={"detect_fps": str(args.job_fps)},
                )
            else:
                response = await client.post("/api/detect", files={"file": ("image.jpg", image, "image/jpeg")})
        except httpx.HTTPError:
            pass  # counted as status 0
        status = response.status_code if response is not None else 0
        load.samples.append(Sample(kind, status, time.monotonic() - started))
        if response is not None and kind == "job" and status == 201:
            job_id = response.json()["id"]
            followers.append(asyncio.create_task(follow_job(client, job_id, started, end + args.drain, load)))
        if response is not None and status == 429:
            # Honour the hint, jittered so the clients do not come back in step.
            await asyncio.sleep(float(response.headers.get("retry-after", "1")) * rng.uniform(0.5, 1.0))
    await asyncio.gather(*followers)


async def run_load(base_url: str, args: argparse.Namespace, cameras: list[str], load: Load) -> dict[str, float]:
    """Run the clients; returns the cameras' processed fps over the load window (not the drain after it)."""
    image, clip = args.image.read_bytes(), args.clip.read_bytes()
    limits = httpx.Limits(max_connections=args.clients * 2 + 2)
    async with httpx.AsyncClient(base_url=base_url, timeout=args.timeout, limits=limits) as client:

        async def counts() -> dict[str, int]:
            stats = [(await client.get(f"/api/cameras/{c}/stats")).json() for c in cameras]
            return {c: int(s["frames_processed"]) for c, s in zip(cameras, stats, strict=True)}

        start, before = time.monotonic(), await counts()
        end = start + args.seconds
        clients = [client_loop(client, args, image, clip, end, load, i) for i in range(args.clients)]
        running = asyncio.gather(*clients)
        await asyncio.sleep(args.seconds)
        after, elapsed = await counts(), time.monotonic() - start
        await running
    return camera_fps(before, after, elapsed)


def summarise(kind: str, samples: list[Sample], seconds: float) -> dict[str, Any]:
    mine = [s for s in samples if s.kind == kind]
    codes = Counter(s.status for s in mine)
    accepted = [s.latency_s for s in mine if 200 <= s.status < 300]
    return {
        "requests": len(mine),
        "requests_per_s": round(len(mine) / seconds, 3),
        "status_counts": {str(k): v for k, v in sorted(codes.items())},
        "rate_429": round(codes[429] / len(mine), 4) if mine else None,
        "errors": sum(v for k, v in codes.items() if not (200 <= k < 300 or k == 429)),
        "latency_s_p50": percentile([s.latency_s for s in mine], 50),
        "latency_s_p95": percentile([s.latency_s for s in mine], 95),
        "accepted_latency_s_p50": percentile(accepted, 50),
        "accepted_latency_s_p95": percentile(accepted, 95),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="streamsrv-jobs-load-"))
    config = workdir / "streamsrv.yaml"
    write_config(config, args)
    cameras = [f"cam{i}" for i in range(args.cameras)]
    app = AppServer(config)
    app.start()
    try:
        app.wait_ready()
        with app.client(timeout_s=60) as http:
            while cameras and min(processed(http, cameras).values()) < 3:
                time.sleep(0.5)
            print(f"[jobs_load] ready; baseline for {args.baseline:g}s", file=sys.stderr, flush=True)
            t0, c0 = time.monotonic(), processed(http, cameras)
            time.sleep(args.baseline)
            before = camera_fps(c0, processed(http, cameras), time.monotonic() - t0)
            print(f"[jobs_load] {args.clients} clients for {args.seconds:g}s", file=sys.stderr, flush=True)
            load = Load()
            during = asyncio.run(run_load(app.base_url, args, cameras, load))
            stats = http.get("/api/jobs").json()["stats"]
    finally:
        app.stop(timeout=30)
    return {
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "machine": {"cpus": os.cpu_count(), "load_average": [round(x, 2) for x in os.getloadavg()]},
        "detect": summarise("detect", load.samples, args.seconds),
        "job": summarise("job", load.samples, args.seconds),
        "jobs": {
            "accepted": sum(1 for s in load.samples if s.kind == "job" and s.status == 201),
            **dict(load.job_states),
            "turnaround_s_p50": percentile(load.turnaround_s, 50),
            "turnaround_s_p95": percentile(load.turnaround_s, 95),
            "server_stats": stats,
        },
        "live_fps_before": before,
        "live_fps_during": during,
        "live_fps_ratio": {c: round(during[c] / before[c], 3) if before[c] else None for c in cameras},
        "live_fps_ratio_min": min((round(during[c] / before[c], 3) for c in cameras if before[c]), default=None),
    }


def table(report: dict[str, Any]) -> str:
    lines = [f"{'kind':<8}{'req':>6}{'req/s':>8}{'429 rate':>10}{'p50 s':>8}{'p95 s':>8}{'errors':>8}"]
    for kind in ("detect", "job"):
        r = {k: "-" if v is None else v for k, v in report[kind].items()}
        lines.append(
            f"{kind:<8}{r['requests']:>6}{r['requests_per_s']:>8}{r['rate_429']:>10}"
            f"{r['latency_s_p50']:>8}{r['latency_s_p95']:>8}{r['errors']:>8}"
        )
    jobs = report["jobs"]
    lines.append(
        f"jobs: {jobs['accepted']} accepted, {jobs.get('done', 0)} done, {jobs.get('failed', 0)} failed, "
        f"{jobs.get('unfinished', 0)} unfinished after the drain, "
        f"turnaround p50/p95 {jobs['turnaround_s_p50']}/{jobs['turnaround_s_p95']} s"
    )
    for cam, fps in report["live_fps_before"].items():
        lines.append(
            f"{cam}: {fps} fps before, {report['live_fps_during'][cam]} during (x{report['live_fps_ratio'][cam]})"
        )
    lines.append(f"live fps ratio goal >= {LIVE_FPS_RATIO_GOAL}: {'met' if ratio_met(report) else 'MISSED'}")
    return "\n".join(lines)


def ratio_met(report: dict[str, Any]) -> bool:
    ratio = report["live_fps_ratio_min"]
    return ratio is None or ratio >= LIVE_FPS_RATIO_GOAL


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="the person model (labels Normal/Fall)")
    p.add_argument("--clip", type=Path, default=DEFAULT_CLIP, help="live cameras loop it; clip jobs upload it")
    p.add_argument("--image", type=Path, default=DEFAULT_IMAGE, help="the JPEG posted to /api/detect")
    p.add_argument("--cameras", type=int, default=2, help="live cameras (K)")
    p.add_argument("--camera-fps", type=float, default=1.0, help="detect_fps of each live camera")
    p.add_argument("--clients", type=int, default=8, help="concurrent clients (N)")
    p.add_argument("--clip-share", type=float, default=0.1, help="fraction of requests that post the clip as a job")
    p.add_argument("--job-fps", type=float, default=2.0, help="detect_fps of the clip jobs")
    p.add_argument("--seconds", type=float, default=60.0, help="load window")
    p.add_argument("--baseline", type=float, default=20.0, help="seconds of live fps measured before the load")
    p.add_argument("--drain", type=float, default=120.0, help="seconds to follow accepted jobs after the window")
    p.add_argument("--timeout", type=float, default=120.0, help="client timeout per request")
    p.add_argument("--threads", type=int, default=0, help="model CPU threads (0: all cores)")
    p.add_argument("--max-batch", type=int, default=8, help="inference.max_batch")
    p.add_argument("--max-concurrent", type=int, default=1, help="jobs.max_concurrent")
    p.add_argument("--max-queued", type=int, default=16, help="jobs.max_queued")
    p.add_argument("--max-detect-inflight", type=int, default=16, help="jobs.max_detect_inflight")
    p.add_argument("--out", type=Path, help="write the JSON report here")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    report = run(args)
    if args.out:
        args.out.write_text(json.dumps(report, indent=2))
    print(table(report))
    return 0 if report["detect"]["errors"] == report["job"]["errors"] == 0 and ratio_met(report) else 1


if __name__ == "__main__":
    sys.exit(main())
