"""Motion gating: detector calls saved and rule results kept, WITH gating against WITHOUT, in one run.

Each clip is analysed twice through ``Analyzer.run`` (what ``streamsrv analyze`` and clip jobs run, offline, at the
clip's own frame rate or ``--detect-fps``) with one detector: once with the camera's motion gate, once with it off.
Both runs go through a ``RuleEngine`` with zones and a tripwire drawn for that clip, and the benchmark reports:

- detector calls per camera-second, CPU seconds (this process, model included) and the motion step's own cost
  (a decode-only pass with and without the gate, per frame and as a share of decoding and of the ungated run);
- the events (line crossings, zone entries) of the ungated run matched to the gated run's (same type, rule and
  direction, within ``--tolerance-s``): lost and extra ones;
- zone occupancy, second by second: seconds where the ungated run saw someone in a zone and the gated one did not;
- the final line counts of both.

Run from the repository root (as a file or a module)::

    python benchmarks/motion_gating.py --device cpu --out motion.json
    python -m benchmarks.motion_gating --clips room --seconds 30

The room clip is 139 s (about 1 900 detector calls for both runs): minutes on a CPU. Results: docs/motion.md.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable like `python -m benchmarks...`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from streamsrv.analyze import Analyzer, open_video
from streamsrv.config.models import AppConfig, CameraConfig
from streamsrv.rules import RuleEngine

SHARED = Path(__file__).resolve().parent.parent.parent / "shared"
# Rules per clip, in fractions of the frame (drawn on frames of each clip; see docs/motion.md).
CLIPS: dict[str, dict[str, Any]] = {
    "room": {
        "video": "media/room_walkins_432p.mp4",
        "rules": {
            # where people stand to read at the table, and a line they cross walking in from the bottom and out
            "zones": [{"name": "table", "units": "norm", "polygon": [[0.3, 0.5], [0.9, 0.5], [0.9, 0.9], [0.3, 0.9]]}],
            "lines": [
                {
                    "name": "entry",
                    "units": "norm",
                    "points": [[0.0, 0.93], [1.0, 0.93]],
                    "left_to_right": "out",
                    "right_to_left": "in",
                }
            ],
        },
    },
    "concourse": {
        "video": "media/concourse_720p.mp4",
        "rules": {
            "zones": [
                {"name": "centre", "units": "norm", "polygon": [[0.35, 0.3], [0.65, 0.3], [0.65, 0.7], [0.35, 0.7]]},
                {"name": "group", "units": "norm", "polygon": [[0.1, 0.4], [0.3, 0.4], [0.3, 0.65], [0.1, 0.65]]},
            ],
            "lines": [{"name": "mid", "units": "norm", "points": [[0.0, 0.55], [1.0, 0.55]]}],
        },
    },
}
MATCHED_EVENTS = ("line.cross", "zone.enter")


@dataclass
class Run:
    """One pass over a clip: what the detector did and what the rules made of it."""

    frames: int = 0
    cpu_s: float = 0.0
    wall_s: float = 0.0
    events: list[dict[str, Any]] = field(default_factory=list)
    occupancy: dict[int, dict[str, int]] = field(default_factory=dict)  # video second -> zone -> people
    line_counts: dict[str, Any] = field(default_factory=dict)


def analyse(analyzer: Analyzer, camera: CameraConfig, detect_fps: float | None, gating: bool, seconds: float) -> Run:
    run = Run()
    engine = RuleEngine(camera.id, camera.rules, clock="video")  # type: ignore[arg-type]
    cpu, wall = time.process_time(), time.perf_counter()
    for result in analyzer.run(camera.url, camera, detect_fps, motion_gating=gating):
        if result.frame.video_ts >= seconds:
            break
        out = engine.process(result)
        run.frames += 1
        run.events += [e.model_dump(include={"type", "ts", "zone", "line", "direction"}) for e in out.events]
        zones = {zone: sum(labels.values()) for zone, labels in out.occupancy.items()}
        run.occupancy[int(result.frame.video_ts)] = zones  # the last frame of each second
        run.line_counts = {k: {d: sum(v.values()) for d, v in dirs.items()} for k, dirs in out.line_counts.items()}
    run.cpu_s, run.wall_s = time.process_time() - cpu, time.perf_counter() - wall
    return run


def match_events(base: list[dict[str, Any]], gated: list[dict[str, Any]], tolerance_s: float) -> dict[str, Any]:
    """Pair each ungated crossing/entry with an unused gated one of the same kind within ``tolerance_s``."""
    key = ("type", "zone", "line", "direction")
    left = [e for e in gated if e["type"] in MATCHED_EVENTS]
    lost, delays = [], []
    for e in (e for e in base if e["type"] in MATCHED_EVENTS):
        near = [g for g in left if all(g[k] == e[k] for k in key) and abs(g["ts"] - e["ts"]) <= tolerance_s]
        if not near:
            lost.append(e)
            continue
        best = min(near, key=lambda g: abs(g["ts"] - e["ts"]))
        left.remove(best)
        delays.append(best["ts"] - e["ts"])
    return {
        "compared": len(delays) + len(lost),
        "matched": len(delays),
        "lost": lost,
        "extra": left,
        "max_shift_s": round(max((abs(d) for d in delays), default=0.0), 3),
    }


def occupancy_gaps(base: Run, gated: Run) -> dict[str, int]:
    """Seconds where the ungated run had someone in a zone and the gated run had nobody there."""
    gaps: dict[str, int] = {}
    last: dict[str, int] = {}
    for second in sorted(base.occupancy):
        last = gated.occupancy.get(second, last)  # a second without a handed frame keeps the previous state
        for zone, people in base.occupancy[second].items():
            occupied = gaps.setdefault(zone, 0)
            gaps[zone] = occupied + int(people > 0 and last.get(zone, 0) == 0)
    return gaps


def motion_cost(video: str, detect_fps: float | None, seconds: float) -> dict[str, float]:
    """Decode-only CPU per frame, and the gate's own CPU per frame on the same frames: what motion adds to a decoder."""
    opened = open_video(video, None, detect_fps)
    decode_s = motion_s = 0.0
    frames = 0
    cpu = time.process_time()
    for frame in opened.source.frames():
        if frame.video_ts >= seconds:
            break
        start = time.process_time()
        decode_s += start - cpu
        opened.gate.check(frame.image, frame.video_ts)
        cpu = time.process_time()
        motion_s += cpu - start
        frames += 1
    opened.source.close()
    return {"decode_ms": round(decode_s / frames * 1000, 3), "motion_ms": round(motion_s / frames * 1000, 3)}


def bench_clip(name: str, analyzer: Analyzer, args: argparse.Namespace) -> dict[str, Any]:
    spec = CLIPS[name]
    video = str(args.shared / spec["video"])
    camera = CameraConfig.model_validate({"id": name, "url": video, "rules": spec["rules"]})
    plain = analyse(analyzer, camera, args.detect_fps, False, args.seconds)
    gated = analyse(analyzer, camera, args.detect_fps, True, args.seconds)
    duration = min(args.seconds, (max(plain.occupancy) + 1) if plain.occupancy else 0)
    cost = motion_cost(video, args.detect_fps, args.seconds)
    per_frame_plain = plain.cpu_s / max(plain.frames, 1) * 1000
    return {
        "clip": spec["video"],
        "seconds": duration,
        "detector_calls": {"without": plain.frames, "with": gated.frames},
        "calls_per_camera_s": {"without": round(plain.frames / duration, 2), "with": round(gated.frames / duration, 2)},
        "fewer_calls": round(plain.frames / max(gated.frames, 1), 2),
        "skipped_no_motion": plain.frames - gated.frames,  # every due frame the gate held back
        "cpu_s": {"without": round(plain.cpu_s, 1), "with": round(gated.cpu_s, 1)},
        "motion_step": {**cost, "share_of_ungated_frame": round(cost["motion_ms"] / per_frame_plain, 4)},
        "events": match_events(plain.events, gated.events, args.tolerance_s),
        "occupancy_gap_s": occupancy_gaps(plain, gated),
        "line_counts": {"without": plain.line_counts, "with": gated.line_counts},
        "events_without": plain.events if args.list_events else None,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--clips", nargs="+", choices=sorted(CLIPS), default=["room", "concourse"])
    p.add_argument("--shared", type=Path, default=SHARED, help="the shared data folder (default: ../shared)")
    p.add_argument("--model", help="weights (default: the shared person detector)")
    p.add_argument("--device", default="auto")
    p.add_argument("--imgsz", type=int, default=640)
    p.add_argument("--detect-fps", type=float, help="frames/s analysed (default: every frame)")
    p.add_argument("--seconds", type=float, default=math.inf, help="analyse only the first seconds of each clip")
    p.add_argument("--tolerance-s", type=float, default=1.0, help="how far apart matched events may be")
    p.add_argument("--list-events", action="store_true", help="also list the ungated run's events")
    p.add_argument("--out", type=Path, help="also write the results here as JSON")
    args = p.parse_args(argv)
    cfg = AppConfig.model_validate(
        {
            "model": {
                "path": args.model or str(args.shared / "models" / "person_yolov8s.pt"),
                "labels": {"Normal": "person", "Fall": "person"},
            },
            "inference": {"device": args.device, "imgsz": args.imgsz},
        }
    )
    analyzer = Analyzer(cfg)
    results = [bench_clip(name, analyzer, args) for name in args.clips]
    text = json.dumps(results, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
