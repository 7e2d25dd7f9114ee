"""Webhook throughput: events per second from the outputs to a local HTTP receiver, and delivery latency.

It starts a real receiver on 127.0.0.1 (tests/support/webhook_receiver.py, which checks every signature), an
``OutputManager`` with one signed webhook on an in-process bus, and publishes ``--events`` events spread over
``--cameras`` cameras (at ``--rate`` events/s, or as fast as possible with 0). The outbox is the spool file (each
append fsync'd, in a temporary directory, or ``--spool-dir`` to measure a particular disk) or, with
``--redis-url``, a Redis Stream. It reports:

- throughput: events delivered per second, from the first publish to the last delivery;
- latency p50/p95/max: from ``bus.publish`` to the receiver taking the POST (the outbox write, the queue and the
  HTTP round trip);
- whether every event arrived exactly once, in order per camera, signed.

    python -m benchmarks.webhooks --events 2000 --cameras 4
    python benchmarks/webhooks.py --events 500 --rate 100 --redis-url redis://127.0.0.1:6379/0 --out webhooks.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file (python benchmarks/x.py): import from this checkout, as -m does
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from streamsrv.config.outputs import OutputsConfig
from streamsrv.events import Event, EventSequencer, InProcessBus
from streamsrv.outputs import OutputManager
from tests.support.webhook_receiver import WebhookReceiver

SECRET = b"benchmark-secret"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--events", type=int, default=2000, help="events to publish")
    p.add_argument("--cameras", type=int, default=4, help="cameras the events are spread over")
    p.add_argument("--rate", type=float, default=0.0, help="events per second to publish; 0: as fast as possible")
    p.add_argument("--redis-url", default=None, help="use the Redis outbox at this URL instead of the spool file")
    p.add_argument("--spool-dir", type=Path, default=None, help="spool directory (a temporary one when unset)")
    p.add_argument("--timeout", type=float, default=300.0, help="give up waiting for deliveries after this, s")
    p.add_argument("--out", type=Path, default=None, help="write the JSON report here")
    return p.parse_args(argv)


def make_events(n: int, cameras: int) -> list[Event]:
    seqrs = [EventSequencer(f"cam{i}", run_id="bench") for i in range(cameras)]
    return [
        seqrs[i % cameras].make("line.cross", ts=time.time(), track_id=i, label="person", confidence=0.9,
                                bbox=(1, 2, 3, 4), line="gate", direction="in")
        for i in range(n)
    ]  # fmt: skip


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def run(args: argparse.Namespace, spool_dir: Path) -> dict[str, Any]:
    receiver = WebhookReceiver(secret=SECRET)
    receiver.start()
    cfg = OutputsConfig.model_validate(
        {"webhooks": [{"url": receiver.url, "secret": SECRET.decode()}], "spool_dir": str(spool_dir)}
    )
    bus = InProcessBus()
    manager = OutputManager(cfg, bus, args.redis_url)
    manager.start()
    events = make_events(args.events, args.cameras)
    published: dict[str, float] = {}
    try:
        start = time.monotonic()
        for i, event in enumerate(events):
            if args.rate > 0:
                time.sleep(max(0.0, start + i / args.rate - time.monotonic()))
            published[event.id] = time.monotonic()
            bus.publish(event)
        deadline = time.monotonic() + args.timeout
        while len(receiver.accepted) < len(events) and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        manager.stop()
        receiver.stop()
    accepted = list(receiver.accepted)
    latencies = [d.received_at - published[d.event_id] for d in accepted]
    elapsed = (max(d.received_at for d in accepted) - start) if accepted else float("nan")
    ids = [d.event_id for d in accepted]
    in_order = all(
        [d.event["seq"] for d in accepted if d.event["camera_id"] == cam]
        == sorted(d.event["seq"] for d in accepted if d.event["camera_id"] == cam)
        for cam in {e.camera_id for e in events}
    )
    return {
        "outbox": "redis" if args.redis_url else "spool",
        "events": len(events),
        "cameras": args.cameras,
        "rate": args.rate or None,
        "delivered": len(set(ids)),
        "exactly_once": sorted(set(ids)) == sorted(published) and len(ids) == len(set(ids)),
        "in_order_per_camera": in_order,
        "all_signed": all(d.signed for d in accepted),
        "events_per_s": len(accepted) / elapsed if accepted else 0.0,
        "latency_s": {
            "p50": percentile(latencies, 0.5) if latencies else None,
            "p95": percentile(latencies, 0.95) if latencies else None,
            "max": max(latencies) if latencies else None,
            "mean": statistics.fmean(latencies) if latencies else None,
        },
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.spool_dir is not None:
        report = run(args, args.spool_dir)
    else:
        with tempfile.TemporaryDirectory(prefix="streamsrv-webhooks-") as tmp:
            report = run(args, Path(tmp))
    lat = report["latency_s"]
    print(f"outbox {report['outbox']}: {report['delivered']}/{report['events']} events to a local receiver")
    print(f"  throughput   {report['events_per_s']:.0f} events/s")
    if lat["p50"] is not None:
        ms = {k: v * 1000 for k, v in lat.items()}
        print(f"  latency      p50 {ms['p50']:.1f} ms, p95 {ms['p95']:.1f} ms, max {ms['max']:.1f} ms")
    checks = ("exactly_once", "in_order_per_camera", "all_signed")
    print("  " + ", ".join(f"{name.replace('_', ' ')} {report[name]}" for name in checks))
    if args.out is not None:
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    return 0 if report["exactly_once"] and report["in_order_per_camera"] else 1


if __name__ == "__main__":
    sys.exit(main())
