"""Cluster failover: N ``streamsrv serve`` nodes and M cameras on one Redis; kill -9 one node and time the recovery.

It starts a redis-server (no persistence), N nodes (each its own port, the same cameras in every config: they seed
the registry), M looping file cameras with a zone over the whole frame (so events flow), and waits until every
camera is leased and online. Then:

1. **Control plane cost**: for ``--monitor-s`` seconds it records every command Redis runs (MONITOR) and splits
   them into client commands (a script counts once) and commands run inside scripts, and into event writes (the
   fenced event script) and the rest (heartbeats, leases, registry reads): ops/s per camera.
2. **Failover**: SIGKILL the node with the most cameras; per moved camera the time until another node holds its
   lease and until that node reports it online (p50/p95/max), and the event gap: the last event the stream got
   from the dead node's run before the kill to the first from the new owner (any event, and the first zone event).
3. **Duplicates**: over the whole stream, events written twice (same id) and per-camera seqs repeated.
4. **Join**: a new node joins the survivors; how many cameras moved (the fair share is M / nodes).

    python -m benchmarks.cluster_failover --nodes 3 --cameras 6 --lease-s 3 --out cluster.json  # docs/cluster.md

Progress goes to stderr, the JSON report to ``--out`` and its summary to stdout.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any, cast

if __package__ in (None, ""):  # run as a file (python benchmarks/x.py): import from this checkout, as -m does
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
import redis

from streamsrv.events.model import Event
from streamsrv.events.redis_fence import FENCED_DELIVER
from tests.support.app_server import AppServer, model_section
from tests.support.processes import RedisServer, free_port

REPO = Path(__file__).resolve().parent.parent
ZONE = "{zones: [{name: all, polygon: [[0, 0], [1, 0], [1, 1], [0, 1]], units: norm}]}"


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--nodes", type=int, default=3, help="nodes before the kill (default 3)")
    p.add_argument("--cameras", type=int, default=6, help="cameras (default 6)")
    p.add_argument("--lease-s", type=float, default=3.0, help="cluster.lease_s (default 3)")
    p.add_argument("--detect-fps", type=float, default=1.0, help="per camera (default 1)")
    p.add_argument("--monitor-s", type=float, default=15.0, help="control-plane measuring window (default 15)")
    p.add_argument("--events-timeout-s", type=float, default=120.0, help="wait for moved cameras' zone events")
    p.add_argument("--clip", type=Path, default=REPO.parent / "shared" / "media" / "concourse_360p.mp4")
    p.add_argument("--model", type=Path, default=REPO.parent / "shared" / "models" / "person_yolov8s.pt")
    p.add_argument("--out", type=Path, help="JSON report")
    args = p.parse_args(argv)
    if args.nodes < 2 or args.cameras < 1:
        p.error("--nodes must be 2 or more and --cameras 1 or more")
    return args


class Cluster:
    def __init__(self, args: argparse.Namespace, workdir: Path, redis_url: str) -> None:
        self.args, self.workdir, self.redis_url = args, workdir, redis_url
        self.nodes: dict[str, AppServer] = {}

    def start(self, node_id: str) -> AppServer:
        a = self.args
        text = model_section(a.model) + (
            f"cluster: {{redis_url: '{self.redis_url}', node_id: {node_id}, lease_s: {a.lease_s}}}\ncameras:\n"
        )
        text += "".join(
            f"  - {{id: cam{i}, url: '{a.clip}', loop: true, detect_fps: {a.detect_fps}, rules: {ZONE}}}\n"
            for i in range(a.cameras)
        )
        path = self.workdir / f"{node_id}.yaml"
        path.write_text(text)
        server = AppServer(path, port=free_port())
        server.start()
        self.nodes[node_id] = server
        return server

    def live(self) -> dict[str, AppServer]:
        return {n: s for n, s in self.nodes.items() if s.running}

    def view(self) -> tuple[dict[str, str], dict[str, str]]:
        """(camera -> lease holder, camera -> state) as a live node reports them."""
        server = next(iter(self.live().values()))
        with httpx.Client(base_url=server.base_url, timeout=10) as http:
            owners = {c: v["node"] for c, v in http.get("/api/cluster").json()["cameras"].items()}
            states = {c["id"]: c["state"] for c in http.get("/api/cameras").json()}
        return owners, states

    def wait_settled(self, timeout_s: float) -> dict[str, str]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                owners, states = self.view()
            except httpx.HTTPError:
                time.sleep(1)
                continue
            live = set(self.live())
            placed = len(owners) == self.args.cameras and set(owners.values()) <= live
            if placed and all(s == "online" for s in states.values()):
                return owners
            time.sleep(0.5)
        raise SystemExit(f"cameras not settled within {timeout_s:.0f} s")

    def close(self) -> None:
        for server in self.nodes.values():
            server.stop(timeout=30)


def monitor(url: str, seconds: float) -> dict[str, Any]:
    """Every command Redis runs for ``seconds`` (MONITOR), classified."""
    fenced = hashlib.sha1(FENCED_DELIVER.encode()).hexdigest()
    counts: Counter[str] = Counter()
    client = redis.Redis.from_url(url)
    stop = threading.Event()

    def run() -> None:
        with client.monitor() as m:
            for cmd in m.listen():
                if stop.is_set():
                    return
                text = cmd.get("command", "")
                inside = cmd.get("client_type") == "lua"
                write = (not inside) and text.lower().startswith("evalsha") and fenced in text
                counts["script_inner" if inside else "event_writes" if write else "control_plane"] += 1

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    time.sleep(seconds)
    stop.set()
    client.ping()  # one more command lets the monitor loop see stop
    thread.join(5)
    client.close()
    return dict(counts)


def stream(client: redis.Redis) -> list[tuple[float, Event]]:
    out = []
    entries = cast(list[tuple[bytes, dict[bytes, bytes]]], client.xrange("streamsrv:events"))
    for entry_id, fields in entries:
        out.append((int(entry_id.decode().split("-")[0]) / 1000, Event.from_json(fields[b"event"])))
    return out


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))], 2)


def run(args: argparse.Namespace) -> dict[str, Any]:
    report: dict[str, Any] = {"settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}}
    with tempfile.TemporaryDirectory() as tmp, RedisServer() as redis_server:
        client = redis.Redis.from_url(redis_server.url)
        cluster = Cluster(args, Path(tmp), redis_server.url)
        try:
            for n in range(args.nodes):
                cluster.start(f"node{n}")
            progress(f"{args.nodes} nodes started; waiting for {args.cameras} cameras to settle")
            owners = cluster.wait_settled(600)
            progress(f"settled: {dict(Counter(owners.values()))}")

            counts = monitor(redis_server.url, args.monitor_s)
            per = args.monitor_s * args.cameras
            report["redis_ops_per_s_per_camera"] = {
                "control_plane": round(counts.get("control_plane", 0) / per, 3),
                "event_writes": round(counts.get("event_writes", 0) / per, 3),
                "inside_scripts": round(counts.get("script_inner", 0) / per, 3),
                "window_s": args.monitor_s,
            }
            progress(f"Redis ops/s per camera: {report['redis_ops_per_s_per_camera']}")

            victim = max(set(owners.values()), key=lambda n: list(owners.values()).count(n))
            moved = sorted(c for c, n in owners.items() if n == victim)
            pid = cluster.nodes[victim].pid
            assert pid is not None
            killed = time.time()
            os.kill(pid, signal.SIGKILL)
            cluster.nodes[victim].kill()  # reaps it
            progress(f"kill -9 {victim} ({len(moved)} cameras: {', '.join(moved)})")
            leased: dict[str, float] = {}
            online: dict[str, float] = {}
            while len(online) < len(moved) and time.time() - killed < 300:
                try:
                    now_owners, states = cluster.view()
                except httpx.HTTPError:
                    continue
                now = time.time() - killed
                for c in moved:
                    if now_owners.get(c) not in (None, victim):
                        leased.setdefault(c, now)
                        if states.get(c) == "online":
                            online.setdefault(c, now)
                time.sleep(0.2)
            progress(f"recovered: leased {leased}, online {online}")

            deadline = time.time() + args.events_timeout_s
            while time.time() < deadline:
                events = stream(client)
                zoned = {e.camera_id for t, e in events if t > killed and e.type.startswith("zone.")}
                if set(moved) <= zoned:
                    break
                time.sleep(2)
            events = stream(client)
            gaps: dict[str, dict[str, float | None]] = {}
            for c in moved:
                before = [t for t, e in events if e.camera_id == c and t <= killed]
                after = [(t, e) for t, e in events if e.camera_id == c and t > killed]
                last = max(before) if before else None
                first_any = min((t for t, _ in after), default=None)
                first_zone = min((t for t, e in after if e.type.startswith("zone.")), default=None)
                gaps[c] = {
                    "first_event_after_kill_s": None if first_any is None else round(first_any - killed, 2),
                    "first_zone_event_after_kill_s": None if first_zone is None else round(first_zone - killed, 2),
                    "any_event_s": None if last is None or first_any is None else round(first_any - last, 2),
                    "zone_event_s": None if last is None or first_zone is None else round(first_zone - last, 2),
                }
            ids = Counter(e.id for _, e in events)
            seqs = Counter((e.camera_id, e.seq) for _, e in events)
            report["failover"] = {
                "killed": victim,
                "moved": moved,
                "lease_s": args.lease_s,
                "to_lease_s": {
                    "p50": pct(list(leased.values()), 0.5),
                    "p95": pct(list(leased.values()), 0.95),
                    "max": pct(list(leased.values()), 1.0),
                },
                "to_online_s": {
                    "p50": pct(list(online.values()), 0.5),
                    "p95": pct(list(online.values()), 0.95),
                    "max": pct(list(online.values()), 1.0),
                },
                "per_camera": {c: {"leased_s": leased.get(c), "online_s": online.get(c), **gaps[c]} for c in moved},
                "event_gap_s_median": statistics.median(
                    [g["any_event_s"] for g in gaps.values() if g["any_event_s"] is not None] or [0.0]
                ),
            }
            report["events"] = {
                "in_stream": len(events),
                "duplicate_ids": sum(n - 1 for n in ids.values() if n > 1),
                "repeated_seqs": sum(n - 1 for n in seqs.values() if n > 1),
            }
            progress(f"events: {report['events']}")

            before_join, _ = cluster.view()
            cluster.start("joiner")
            progress("a node joins")
            joiner = cluster.nodes["joiner"]
            deadline = time.time() + 300
            while time.time() < deadline:
                try:
                    with httpx.Client(base_url=joiner.base_url, timeout=10) as http:
                        if http.get("/readyz").status_code == 200:
                            break
                except httpx.HTTPError:
                    pass
                time.sleep(1)
            time.sleep(2 * args.lease_s)  # the hand-overs it causes
            after_join = cluster.wait_settled(300)
            nodes_now = len(cluster.live())
            moved_on_join = sorted(c for c in before_join if before_join[c] != after_join.get(c))
            report["join"] = {
                "moved": moved_on_join,
                "moved_to_the_new_node": sum(1 for c in moved_on_join if after_join.get(c) == "joiner"),
                "fair_share": round(args.cameras / nodes_now, 2),
                "nodes_after": nodes_now,
            }
            progress(f"join: {report['join']}")
        finally:
            cluster.close()
    return report


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    report = run(args)
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    summary = {k: v for k, v in report.items() if k != "settings"}
    summary["failover"] = {k: v for k, v in summary["failover"].items() if k != "per_camera"}
    print(json.dumps(summary, indent=2))
    ok = report["events"]["duplicate_ids"] == 0 and report["events"]["repeated_seqs"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
