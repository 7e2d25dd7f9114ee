"""Soak test: N live cameras through ``streamsrv serve`` for a set duration, watching for anything that grows.

It starts what a deployment runs: a GStreamer RTSP server looping the clip on one mount per camera (or the clip
as looping file cameras with ``--source file``), optionally a Redis server for events, and ``streamsrv serve``
with a tripwire on every camera, so decoding, inference, tracking, rules and events all run. Every
``--interval`` seconds it samples:

- per process of the server's tree (``main``, ``inference``, ``decoder:<camera>``, ``resource_tracker``, known by
  the titles the server gives them): RSS, open file descriptors and threads (psutil), and the tree's totals;
- how full the server's bounded caches are (``streamsrv_cache_*`` in ``/metrics``: snapshots, events, job results,
  preview frames);
- shared memory: the server's frame rings in /dev/shm and the POSIX semaphores its processes have mapped;
- per camera from ``GET /api/cameras/{id}/stats``: state, processed fps, frames processed, frame age p50/p95,
  frames dropped (latest-wins and stale), reconnects, decoder restarts; plus a ``snapshot.jpg`` so the preview
  path runs too.

After ``--warmup`` seconds the samples are judged. It fails (exit status 1) when:

- the RSS of any process role, or of the whole tree, grows more than ``--max-growth-pct`` (5 %): the median of
  the last quarter of the samples against the median of the first quarter (medians, so one garbage-collection
  spike does not decide);
- any count (fds, threads, processes, rings, semaphores) keeps growing: its least-squares slope over the
  samples adds up to 2 or more over the window *and* the last quarter's minimum is above the first quarter's
  maximum. A one-off step (a lazily opened file, a worker thread started once) is not a leak; a rising floor is;
- a camera stops processing during the window, or SIGTERM leaves a frame ring behind in /dev/shm.

    python -m benchmarks.soak --duration 1800 --cameras 4 --redis --out soak30.json   # docs/reliability.md's run
    python -m benchmarks.soak --duration 120 --cameras 2                                # the CI variant

Progress goes to stderr, a line per sample; the JSON report (settings, every sample, the per-series summary and
the checks) to ``--out`` and its summary to stdout. The summary's ``memory`` gives each process's RSS slope after the
warm-up (MB/hour, and whether it levels off: under 5 MB/hour), ``caches`` each cache's final size and growth: memory
that keeps growing while the caches are full or flat is a leak.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file (python benchmarks/x.py): import from this checkout, as -m does
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
import numpy as np
import psutil

from tests.support.app_server import READY_TIMEOUT_S, AppServer
from tests.support.processes import RedisServer, RtspServer

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("STREAMSRV_SHARED", REPO.parent / "shared"))
DEFAULT_CLIP = SHARED / "media" / "concourse_360p.mp4"
DEFAULT_MODEL = SHARED / "models" / "person_yolov8s.pt"
SHM_DIR = Path("/dev/shm")
COUNT_KEYS = ("fds", "threads")
TREE_COUNT_KEYS = ("fds", "threads", "processes", "shm_rings", "semaphores")
# A count "keeps growing" only if its trend adds up to at least this much over the window (see the docstring).
MIN_COUNT_GROWTH = 2.0
# A process "levels off" once its RSS grows less than this per hour (reported in the summary, not judged).
LEVEL_MB_PER_HOUR = 5.0


@dataclass(frozen=True)
class ProcessSample:
    role: str
    pid: int
    rss_mb: float
    anon_mb: float  # the heap, stacks, malloc'd buffers: where a leak shows
    shared_mb: float  # file-backed and shared pages (libraries, the model, frame rings), faulted in as touched
    fds: int
    threads: int


def process_role(proc: psutil.Process, server_pid: int) -> str:
    """What a process of the server's tree is, from the title it gives itself (``streamsrv: decoder door``)."""
    if proc.pid == server_pid:
        return "main"
    title = " ".join(proc.cmdline()).strip()  # the title is padded to the length of the original command line
    if title == "streamsrv: inference":
        return "inference"
    if title.startswith("streamsrv: decoder "):
        return f"decoder:{title.removeprefix('streamsrv: decoder ')}"
    if "resource_tracker" in title:
        return "resource_tracker"
    return f"other:{proc.pid}"


def sample_processes(server_pid: int) -> tuple[list[ProcessSample], set[str]]:
    """Every live process of the server's tree, and the POSIX semaphores (sem.*) the tree has mapped."""
    root = psutil.Process(server_pid)
    samples: list[ProcessSample] = []
    semaphores: set[str] = set()
    for proc in [root, *root.children(recursive=True)]:
        try:
            with proc.oneshot():
                mapped = {m.path for m in proc.memory_maps(grouped=True)}
                memory = proc.memory_info()
                samples.append(
                    ProcessSample(
                        role=process_role(proc, server_pid),
                        pid=proc.pid,
                        rss_mb=memory.rss / 2**20,
                        anon_mb=(memory.rss - memory.shared) / 2**20,
                        shared_mb=memory.shared / 2**20,
                        fds=proc.num_fds(),
                        threads=proc.num_threads(),
                    )
                )
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            continue  # a decoder restarting between the listing and the read
        semaphores |= {p for p in mapped if p.startswith(str(SHM_DIR / "sem."))}
    return samples, semaphores


def server_rings(server_pid: int) -> list[Path]:
    return sorted(SHM_DIR.glob(f"streamsrv-{server_pid}-*"))


def sample(http: httpx.Client, server_pid: int, cameras: list[str], t_s: float, snapshots: bool) -> dict[str, Any]:
    procs, semaphores = sample_processes(server_pid)
    cams: dict[str, Any] = {}
    for cam in cameras:
        stats = http.get(f"/api/cameras/{cam}/stats").json()
        cams[cam] = {
            k: stats[k]
            for k in (
                "state",
                "processed_fps",
                "frames_processed",
                "frame_age_ms_p50",
                "frame_age_ms_p95",
                "dropped_latest_wins",
                "dropped_stale",
                "reconnects",
                "decoder_restarts",
            )
        }
        if snapshots:
            cams[cam]["snapshot_status"] = http.get(f"/api/cameras/{cam}/snapshot.jpg").status_code
    ready = http.get("/readyz").json()
    metrics = http.get("/metrics").text
    heap = inference_heap_mb(metrics)
    return {
        "t_s": round(t_s, 1),
        "processes": [asdict(p) for p in procs],
        "tree": {
            "rss_mb": round(sum(p.rss_mb for p in procs), 1),
            "anon_mb": round(sum(p.anon_mb for p in procs), 1),
            "shared_mb": round(sum(p.shared_mb for p in procs), 1),
            "fds": sum(p.fds for p in procs),
            "threads": sum(p.threads for p in procs),
            "processes": len(procs),
            "shm_rings": len(server_rings(server_pid)),
            "semaphores": len(semaphores),
        },
        "inference_restarts": ready["inference_restarts"],
        "inference_heap_mb": heap,
        "caches": cache_sizes(metrics),
        "cameras": cams,
    }


def inference_heap_mb(metrics_text: str) -> dict[str, float]:
    """The inference process's C heap (in use, free) from a ``/metrics`` scrape: says whether RSS growth is a leak
    (in use grows) or memory the allocator holds (free grows); empty where the server is not on glibc."""
    prefix = 'streamsrv_inference_heap_bytes{state="'
    out = {}
    for line in metrics_text.splitlines():
        if line.startswith(prefix):
            state, value = line[len(prefix) :].split('"}')
            out[state] = round(float(value) / 2**20, 1)
    return out


def cache_sizes(metrics_text: str) -> dict[str, dict[str, float]]:
    """Per bounded cache (``streamsrv_cache_*{cache=...}``), its items and bytes now, from a ``/metrics`` scrape."""
    out: dict[str, dict[str, float]] = {}
    for line in metrics_text.splitlines():
        for key in ("items", "bytes"):
            prefix = f'streamsrv_cache_{key}{{cache="'
            if line.startswith(prefix):
                cache, value = line[len(prefix) :].split('"}')
                out.setdefault(cache, {})[key] = float(value)
    return out


def slope_per_s(t: list[float], y: list[float]) -> float:
    """Least-squares slope of y over t."""
    if len(t) < 2 or max(t) == min(t):
        return 0.0
    return float(np.polyfit(np.asarray(t, float), np.asarray(y, float), 1)[0])


def judge_memory(name: str, t: list[float], rss: list[float], max_growth_pct: float) -> dict[str, Any]:
    q = max(1, len(rss) // 4)
    first, last = statistics.median(rss[:q]), statistics.median(rss[-q:])
    growth = 100.0 * (last - first) / first if first else 0.0
    return {
        "series": f"{name}.rss_mb",
        "first_quarter_median": round(first, 1),
        "last_quarter_median": round(last, 1),
        "growth_pct": round(growth, 2),
        "slope_per_hour": round(slope_per_s(t, rss) * 3600, 2),
        "ok": growth <= max_growth_pct,
    }


def judge_count(name: str, t: list[float], values: list[float]) -> dict[str, Any]:
    q = max(1, len(values) // 4)
    slope = slope_per_s(t, values)
    trend = slope * (t[-1] - t[0]) if len(t) > 1 else 0.0
    rising_floor = min(values[-q:]) > max(values[:q])
    return {
        "series": name,
        "first": values[0],
        "last": values[-1],
        "min": min(values),
        "max": max(values),
        "slope_per_hour": round(slope * 3600, 2),
        "ok": not (trend >= MIN_COUNT_GROWTH and rising_floor),
    }


def role_series(samples: list[dict[str, Any]], key: str) -> dict[str, tuple[list[float], list[float]]]:
    """Per process role, (times, values) of ``key``; a role sampled twice at once (a restart in flight) sums."""
    series: dict[str, dict[float, float]] = {}
    for s in samples:
        for p in s["processes"]:
            if p["role"].startswith("other:"):
                continue
            per_t = series.setdefault(p["role"], {})
            per_t[s["t_s"]] = per_t.get(s["t_s"], 0.0) + p[key]
    return {role: (list(v), list(v.values())) for role, v in series.items()}


def analyse(samples: list[dict[str, Any]], warmup_s: float, max_growth_pct: float) -> dict[str, Any]:
    post = [s for s in samples if s["t_s"] >= warmup_s]
    if len(post) < 4:
        return {"checks": [{"series": "samples", "ok": False, "detail": f"only {len(post)} after warm-up"}]}
    t = [s["t_s"] for s in post]
    checks = [judge_memory("tree", t, [s["tree"]["rss_mb"] for s in post], max_growth_pct)]
    for role, (rt, rss) in sorted(role_series(post, "rss_mb").items()):
        if len(rss) >= 4:
            checks.append(judge_memory(role, rt, rss, max_growth_pct))
    for key in TREE_COUNT_KEYS:
        checks.append(judge_count(f"tree.{key}", t, [s["tree"][key] for s in post]))
    for key in COUNT_KEYS:
        for role, (rt, values) in sorted(role_series(post, key).items()):
            if len(values) >= 4:
                checks.append(judge_count(f"{role}.{key}", rt, values))
    for cam in post[0]["cameras"]:
        first, last = post[0]["cameras"][cam], post[-1]["cameras"][cam]
        processed = last["frames_processed"] - first["frames_processed"]
        checks.append({"series": f"camera:{cam}.frames_processed", "delta": processed, "ok": processed > 0})
    cameras = {}
    for cam in post[0]["cameras"]:
        ages = [s["cameras"][cam]["frame_age_ms_p95"] for s in post]
        fps = [s["cameras"][cam]["processed_fps"] for s in post]
        first, last = post[0]["cameras"][cam], post[-1]["cameras"][cam]
        cameras[cam] = {
            "processed_fps_mean": round(statistics.fmean(fps), 2),
            "frame_age_ms_p95_first_quarter": round(statistics.median(ages[: max(1, len(ages) // 4)]), 1),
            "frame_age_ms_p95_last_quarter": round(statistics.median(ages[-max(1, len(ages) // 4) :]), 1),
            "frame_age_ms_p95_max": max(ages),
            "dropped_latest_wins": last["dropped_latest_wins"] - first["dropped_latest_wins"],
            "dropped_stale": last["dropped_stale"] - first["dropped_stale"],
            "reconnects": last["reconnects"] - first["reconnects"],
            "decoder_restarts": last["decoder_restarts"] - first["decoder_restarts"],
        }
    return {
        "window_s": [t[0], t[-1]],
        "samples": len(post),
        "memory": memory_summary(checks),
        "caches": cache_summary(post),
        "cameras": cameras,
        "checks": checks,
    }


def memory_summary(checks: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per process role (and the tree), RSS at the start and end of the judged window and its slope in MB/hour.

    Over days what matters is the slope once the caches are full: ``levels_off`` says whether it is within
    LEVEL_MB_PER_HOUR. A short run may still be filling caches, so this is reported, not judged.
    """
    out = {}
    for check in checks:
        if check["series"].endswith(".rss_mb"):
            out[check["series"].removesuffix(".rss_mb")] = {
                "rss_mb_first_quarter": check["first_quarter_median"],
                "rss_mb_last_quarter": check["last_quarter_median"],
                "slope_mb_per_hour": check["slope_per_hour"],
                "levels_off": abs(check["slope_per_hour"]) < LEVEL_MB_PER_HOUR,
            }
    return out


def cache_summary(samples: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per bounded cache, its size at the end of the window and how fast its bytes grew (MB/hour) over it."""
    out = {}
    for cache, last in samples[-1].get("caches", {}).items():
        points = [(s["t_s"], s["caches"][cache].get("bytes", 0.0)) for s in samples if cache in s.get("caches", {})]
        t, y = [p[0] for p in points], [p[1] / 2**20 for p in points]
        out[cache] = {**last, "bytes_slope_mb_per_hour": round(slope_per_s(t, y) * 3600, 2)}
    return out


def write_config(
    path: Path, args: argparse.Namespace, urls: list[str], redis_url: str | None, camera_ids: list[str]
) -> None:
    lines = [
        f'model: {{path: "{args.model}", labels: {{Normal: person, Fall: person}}}}',
        f"inference: {{threads: {args.threads}, max_batch: {max(1, len(urls))}}}",
        "server: {log_level: warning}",
    ]
    if redis_url:
        lines.append(f'events: {{redis_url: "{redis_url}"}}')
    lines.append("cameras:")
    tripwire = "{lines: [{name: mid, units: norm, points: [[0, 0.55], [1, 0.55]]}]}"
    for cam, url in zip(camera_ids, urls, strict=True):
        loop = ", loop: true" if args.source == "file" else ""
        lines.append(f'  - {{id: {cam}, url: "{url}", detect_fps: {args.detect_fps}{loop}, rules: {tripwire}}}')
    path.write_text("\n".join(lines) + "\n")


def progress(s: dict[str, Any]) -> str:
    tree = s["tree"]
    fps = " ".join(f"{c['processed_fps']:.1f}" for c in s["cameras"].values())
    age = max((c["frame_age_ms_p95"] for c in s["cameras"].values()), default=0.0)
    return (
        f"[soak] t={s['t_s']:7.1f}s rss={tree['rss_mb']:8.1f}MB "
        f"(anon {tree['anon_mb']:.1f}, shared {tree['shared_mb']:.1f}) heap={s['inference_heap_mb']} "
        f"fds={tree['fds']} threads={tree['threads']} "
        f"procs={tree['processes']} rings={tree['shm_rings']} sems={tree['semaphores']} fps=[{fps}] "
        f"age_p95_max={age:.0f}ms"
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
    camera_ids = [f"soak{i}" for i in range(args.cameras)]
    samples: list[dict[str, Any]] = []
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="streamsrv-soak-")))
        if args.source == "rtsp":
            rtsp = RtspServer(mounts={cam: args.clip for cam in camera_ids})
            rtsp.start()
            stack.callback(rtsp.stop)
            urls = [rtsp.url(cam) for cam in camera_ids]
        else:
            urls = [str(args.clip)] * args.cameras
        redis_url = None
        if args.redis:
            redis = RedisServer()
            redis.start()
            stack.callback(redis.stop)
            redis_url = redis.url
        config = tmp / "soak.yaml"
        write_config(config, args, urls, redis_url, camera_ids)
        app = AppServer(config)
        app.start()
        stack.callback(app.stop, 30)
        server_pid = app.pid
        assert server_pid is not None
        http = stack.enter_context(app.client(timeout_s=30))
        app.wait_ready(READY_TIMEOUT_S)
        print(f"[soak] ready: {args.cameras} camera(s), server pid {server_pid}", file=sys.stderr, flush=True)
        start = time.monotonic()
        next_at = start
        while (now := time.monotonic()) - start <= args.duration:
            s = sample(http, server_pid, camera_ids, now - start, args.snapshots)
            samples.append(s)
            print(progress(s), file=sys.stderr, flush=True)
            next_at += args.interval
            time.sleep(max(0.0, next_at - time.monotonic()))
        http.close()
        app.stop(30)
        exit_code = app._proc.returncode if app._proc is not None else None
        left = [p.name for p in server_rings(server_pid)]
    report = analyse(samples, args.warmup, args.max_growth_pct)
    report["checks"].append({"series": "shutdown.shm_rings_left", "left": left, "ok": not left})
    report["checks"].append({"series": "shutdown.exit_code", "exit_code": exit_code, "ok": exit_code == 0})
    return {
        "settings": {
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "interval_s": args.interval,
            "cameras": args.cameras,
            "source": args.source,
            "clip": str(args.clip),
            "detect_fps": args.detect_fps,
            "threads": args.threads,
            "redis": args.redis,
            "max_growth_pct": args.max_growth_pct,
            "cpu_count": os.cpu_count(),
            "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        },
        "passed": all(c["ok"] for c in report["checks"]),
        "summary": report,
        "samples": samples,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=120.0, help="seconds to run after the server is ready")
    p.add_argument("--cameras", type=int, default=2)
    p.add_argument("--warmup", type=float, help="seconds not judged (default: a quarter of the run, 30..300)")
    p.add_argument("--interval", type=float, default=5.0, help="seconds between samples")
    p.add_argument("--source", choices=("rtsp", "file"), default="rtsp", help="RTSP cameras or looping file cameras")
    p.add_argument("--clip", type=Path, default=DEFAULT_CLIP)
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    p.add_argument("--detect-fps", type=float, default=2.0)
    p.add_argument("--threads", type=int, default=1, help="inference.threads (the machine may be shared)")
    p.add_argument("--redis", action="store_true", help="publish events to a local Redis server")
    p.add_argument("--no-snapshots", dest="snapshots", action="store_false", help="do not fetch snapshot.jpg")
    p.add_argument("--max-growth-pct", type=float, default=5.0)
    p.add_argument("--out", type=Path, help="write the JSON report here")
    args = p.parse_args(argv)
    if args.warmup is None:
        args.warmup = min(300.0, max(30.0, args.duration / 4))
    if args.cameras < 1 or args.duration <= args.warmup:
        p.error("need at least one camera and a duration longer than the warm-up")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = run(args)
    text = json.dumps(result, indent=1)
    if args.out:
        args.out.write_text(text)
    summary = {k: v for k, v in result.items() if k != "samples"}
    print(json.dumps(summary, indent=1))
    failed = [c for c in result["summary"]["checks"] if not c["ok"]]
    for check in failed:
        print(f"[soak] FAILED {check['series']}: {json.dumps(check)}", file=sys.stderr)
    print(f"[soak] {'PASSED' if not failed else 'FAILED'}", file=sys.stderr)
    return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(main())
