"""Tracking and line-count accuracy of ``streamsrv analyze`` against human ground truth, beside ultralytics' own
``model.track`` (ByteTrack with its defaults) on the same weights.

For each sequence directory (MOTChallenge layout: ``seq.mp4``, ``seqinfo.ini``, ``gt/gt.txt``,
``gt/line_crossings.json``), at the sequence's own rate and at each ``--detect-fps``:

  streamsrv: ``Analyzer.records``, what ``streamsrv analyze --camera`` runs, with the sequence's line as a
             tripwire (box-centre anchor, as the ground-truth crossings were derived); confirmed tracks are scored;
  ultralytics: ``YOLO(weights).track(video, vid_stride=...)``, ByteTrack from ``bytetrack.yaml``; its tracks go
             through the same rule engine for line counts.

Tracks are scored with TrackEval (HOTA, MOTA, IDF1, ID switches, FP, FN), counts per direction as true / missed /
extra. Progress goes to stderr; JSON to stdout (or ``--json``), the Markdown table to stderr (or ``--markdown``).

    python benchmarks/accuracy.py ../shared/media/mot/TUD-Campus --json accuracy.json --markdown accuracy.md
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):  # run as a script: make the repository importable like `python -m benchmarks...`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.accuracy_scoring import Sequence, TrackRows, markdown_table, score_crossings, score_tracks
from streamsrv.analyze import Analyzer
from streamsrv.config.models import AppConfig
from streamsrv.config.rules import RulesConfig
from streamsrv.rules import RuleEngine
from streamsrv.rules.geometry import crossings
from streamsrv.types import FrameRef, FrameResult, Tracks

REPO = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = REPO.parent / "shared" / "models" / "person_yolov8s.pt"
# The model's two classes are both people: one label, so neither tracker sees two boxes on one person.
PERSON_LABELS = {"Normal": "person", "Fall": "person"}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def line_rules(seq: Sequence) -> dict[str, Any]:
    """The sequence's line as a tripwire whose direction names are the ground truth's (``left_to_right`` is image
    x increasing there), anchored at the box centre as the crossings were derived."""
    points = np.array(seq.line["points"], np.float64)
    x_increasing = int(
        crossings(np.array([[-1e6, points[:, 1].mean()]]), np.array([[1e6, points[:, 1].mean()]]), points)[0]
    )
    names = ("left_to_right", "right_to_left") if x_increasing > 0 else ("right_to_left", "left_to_right")
    line = {"name": seq.line["name"], "points": seq.line["points"], "anchor": "center"}
    return {"lines": [{**line, "left_to_right": names[0], "right_to_left": names[1]}]}


def run_streamsrv(seq: Sequence, weights: Path, detect_fps: float | None, device: str) -> dict[str, Any]:
    """Analyze the sequence as ``streamsrv analyze --camera`` does; confirmed tracks and counted crossings."""
    cfg = AppConfig.model_validate(
        {
            "model": {"path": str(weights), "labels": PERSON_LABELS},
            "inference": {"device": device},
            "cameras": [{"id": "accuracy", "url": str(seq.video), "rules": line_rules(seq)}],
        }
    )
    rows, processed, counted = TrackRows(), [], []
    for record in Analyzer(cfg).records(str(seq.video), camera=cfg.cameras[0], detect_fps=detect_fps):
        if record["type"] == "frame":
            processed.append(record["frame_index"])
            for t in record["tracks"]:
                if t["confirmed"]:
                    rows.add(record["frame_index"], t["track_id"], t["bbox"])
        elif record["type"] == "event" and record["event"]["type"] == "line.cross":
            counted.append((record["event"]["ts"], record["event"]["direction"]))
    return {"rows": rows, "processed": processed, "counted": counted}


def run_ultralytics(seq: Sequence, weights: Path, detect_fps: float | None, device: str) -> dict[str, Any]:
    """``model.track`` with ultralytics' defaults (ByteTrack, conf 0.1 into the tracker); its tracks are counted
    by our rule engine on the same line."""
    from ultralytics import YOLO

    stride = max(1, round(seq.fps / detect_fps)) if detect_fps else 1
    engine = RuleEngine("ultralytics", RulesConfig.model_validate(line_rules(seq)), clock="video")
    rows, processed, counted = TrackRows(), [], []
    kwargs: dict[str, Any] = {} if device == "auto" else {"device": device}
    results = YOLO(str(weights)).track(source=str(seq.video), stream=True, verbose=False, vid_stride=stride, **kwargs)
    for n, r in enumerate(results):
        index = n * stride
        processed.append(index)
        boxes = r.boxes
        ids = boxes.id
        if ids is None:
            tracks = Tracks.empty()
        else:
            xyxy = boxes.xyxy.cpu().numpy().astype(np.float32)
            tracks = Tracks(
                xyxy=xyxy,
                confidence=boxes.conf.cpu().numpy().astype(np.float32),
                class_id=np.zeros(len(xyxy), np.int32),
                track_id=ids.cpu().numpy().astype(np.int32),
                confirmed=np.ones(len(xyxy), np.bool_),
            )
            for tid, box in zip(tracks.track_id, xyxy, strict=True):
                rows.add(index, int(tid), box)
        h, w = r.orig_shape
        ts = index / seq.fps
        ref = FrameRef("ultralytics", n, index, w, h, 0.0, ts, ts)
        for event in engine.process(FrameResult(ref, tracks, labels={0: "person"})).events:
            if event.type == "line.cross":
                counted.append((event.ts, event.direction))
    return {"rows": rows, "processed": processed, "counted": counted}


RUNNERS = {"streamsrv": run_streamsrv, "ultralytics": run_ultralytics}


def evaluate(
    seq_dir: Path,
    weights: Path,
    rates: list[float | None],
    device: str = "auto",
    trackers: tuple[str, ...] = tuple(RUNNERS),
) -> list[dict[str, Any]]:
    """Run and score the trackers on one sequence at each rate (None: every frame); one result per rate."""
    seq = Sequence.load(seq_dir)
    out = []
    for rate in rates:
        label = f"{rate:g} fps" if rate else f"{seq.fps:g} fps (every frame)"
        runs = {}
        for name in trackers:
            t0 = time.perf_counter()
            runs[name] = RUNNERS[name](seq, weights, rate, device)
            log(
                f"[{seq.name} @ {label}] {name}: {len(runs[name]['processed'])} frames"
                f" in {time.perf_counter() - t0:.1f} s"
            )
        scores = {
            name: {
                **score_tracks(seq, run["processed"], run["rows"]),
                "lines": score_crossings(seq, run["counted"], run["processed"]),
            }
            for name, run in runs.items()
        }
        out.append({"sequence": seq.name, "rate": label, "detect_fps": rate, "trackers": scores})
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sequences", nargs="+", type=Path, metavar="SEQ_DIR", help="MOTChallenge-style sequence directory")
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="weights for both trackers")
    p.add_argument(
        "--detect-fps", type=float, action="append", help="also run at this processed rate (repeatable; default 5)"
    )
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    p.add_argument("--trackers", default=",".join(RUNNERS), help="which to run, comma-separated (default: both)")
    p.add_argument("--json", type=Path, help="write the results here (default: stdout)")
    p.add_argument("--markdown", type=Path, help="write the Markdown table here (default: stderr)")
    args = p.parse_args(argv)
    rates: list[float | None] = [None, *(args.detect_fps or [5.0])]
    trackers = tuple(args.trackers.split(","))
    if unknown := set(trackers) - set(RUNNERS):
        p.error(f"--trackers: {sorted(unknown)} unknown; choose from {sorted(RUNNERS)}")
    runs = [run for seq in args.sequences for run in evaluate(seq, args.model, rates, args.device, trackers)]
    text = json.dumps({"model": args.model.name, "runs": runs}, indent=1)
    if args.json:
        args.json.write_text(text + "\n")
    else:
        print(text)
    table = markdown_table(runs)
    if args.markdown:
        args.markdown.write_text(table)
    else:
        log(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
