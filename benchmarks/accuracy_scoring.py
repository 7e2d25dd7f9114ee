"""Scoring for ``benchmarks/accuracy.py``: tracks against MOTChallenge ground truth (TrackEval), line counts
against crossings derived from it, and the Markdown table of the results.

A sequence directory holds ``seqinfo.ini``, ``gt/gt.txt`` (MOTChallenge: ``frame,id,x,y,w,h,consider,class,vis``,
frames from 1) and ``gt/line_crossings.json`` (the line and the crossings of each ground-truth id).

Only the processed frames are scored: at ``--detect-fps 5`` the ground truth is cut down to the frames the
tracker saw, so skipping is charged for what it does to identities and counts, not for frames nobody looked at.
"""

from __future__ import annotations

import configparser
import contextlib
import json
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

# A counted crossing matches a ground-truth one of the same direction at most this far apart in time: our count
# commits once the anchor is past the line's hysteresis band, a few frames after the ground truth's side change.
CROSSING_TOLERANCE_S = 1.0


@dataclass(frozen=True)
class Sequence:
    """A ground-truth sequence: its video, frame rate, boxes and line crossings."""

    name: str
    root: Path
    fps: float
    length: int
    line: dict[str, Any]  # name, points, left_to_right / right_to_left meaning
    crossings: list[dict[str, Any]]  # frame (from 1), gt_id, direction (left_to_right | right_to_left)

    @property
    def video(self) -> Path:
        return self.root / "seq.mp4"

    @classmethod
    def load(cls, root: Path) -> Sequence:
        info = configparser.ConfigParser()
        info.read(root / "seqinfo.ini")
        seq = info["Sequence"]
        derived = json.loads((root / "gt" / "line_crossings.json").read_text())
        return cls(
            name=seq.get("name", root.name),
            root=root,
            fps=float(seq["frameRate"]),
            length=int(seq["seqLength"]),
            line=derived["line"],
            crossings=derived["events"],
        )


@dataclass
class TrackRows:
    """A tracker's output in MOTChallenge form: ``frame`` from 1, ``id``, box ``x, y, w, h``."""

    rows: list[tuple[int, int, float, float, float, float]] = field(default_factory=list)

    def add(self, frame_index: int, track_id: int, xyxy: Any) -> None:
        x1, y1, x2, y2 = (float(v) for v in xyxy)
        self.rows.append((frame_index + 1, int(track_id), x1, y1, x2 - x1, y2 - y1))

    def ids(self) -> int:
        return len({r[1] for r in self.rows})

    def top_id(self) -> int:
        """The highest id shown: ids used up, by tentative tracks too where a tracker numbers those."""
        return max((r[1] for r in self.rows), default=0)


def _renumbered(frames: list[int]) -> dict[int, int]:
    """Processed frames (from 1) -> 1..n, the timesteps TrackEval scores."""
    return {f: i + 1 for i, f in enumerate(sorted(frames))}


def score_tracks(seq: Sequence, processed: list[int], tracks: TrackRows) -> dict[str, float]:
    """HOTA, MOTA, IDF1, ID switches, FP and FN of a tracker's output on the frames it processed (indices from 0),
    with TrackEval's MOTChallenge evaluation; ``IDs`` is how many distinct ids it showed, ``top_id`` the highest."""
    import trackeval  # imported on use: only the benchmark and its test need it

    steps = _renumbered([f + 1 for f in processed])
    gt = np.loadtxt(seq.root / "gt" / "gt.txt", delimiter=",", ndmin=2)
    with tempfile.TemporaryDirectory(prefix="streamsrv-accuracy-") as tmp, contextlib.redirect_stdout(sys.stderr):
        # TrackEval reports as it goes: to stderr, stdout is for results. It reads throwaway copies cut to the
        # processed frames, outside the repository (the data's licence forbids copying it there).
        gt_dir = Path(tmp, "gt", seq.name)
        (gt_dir / "gt").mkdir(parents=True)
        kept = [row for row in gt if int(row[0]) in steps]
        lines = [",".join([str(steps[int(r[0])]), *(f"{v:g}" for v in r[1:])]) for r in kept]
        (gt_dir / "gt" / "gt.txt").write_text("\n".join(lines) + "\n")
        (gt_dir / "seqinfo.ini").write_text(
            f"[Sequence]\nname={seq.name}\nseqLength={len(steps)}\nframeRate={seq.fps:g}\n"
        )
        out = Path(tmp, "trackers", "tracker", "data")
        out.mkdir(parents=True)
        (out / f"{seq.name}.txt").write_text(
            "".join(
                f"{steps[f]},{tid},{x:.2f},{y:.2f},{w:.2f},{h:.2f},1,-1,-1,-1\n"
                for f, tid, x, y, w, h in tracks.rows
                if f in steps
            )
        )
        dataset = trackeval.datasets.MotChallenge2DBox(
            {
                "GT_FOLDER": str(Path(tmp, "gt")),
                "TRACKERS_FOLDER": str(Path(tmp, "trackers")),
                "TRACKERS_TO_EVAL": ["tracker"],
                "SEQ_INFO": {seq.name: len(steps)},
                "SKIP_SPLIT_FOL": True,
                "PRINT_CONFIG": False,
            }
        )
        evaluator = trackeval.Evaluator(
            {
                "USE_PARALLEL": False,
                "PRINT_RESULTS": False,
                "PRINT_CONFIG": False,
                "TIME_PROGRESS": False,
                "OUTPUT_SUMMARY": False,
                "OUTPUT_DETAILED": False,
                "PLOT_CURVES": False,
            }
        )
        quiet = {"PRINT_CONFIG": False}
        metrics = [trackeval.metrics.HOTA(quiet), trackeval.metrics.CLEAR(quiet), trackeval.metrics.Identity(quiet)]
        results, messages = evaluator.evaluate([dataset], metrics)
    if messages["MotChallenge2DBox"]["tracker"] != "Success":
        raise RuntimeError(f"TrackEval failed: {messages['MotChallenge2DBox']['tracker']}")
    res = results["MotChallenge2DBox"]["tracker"][seq.name]["pedestrian"]
    hota, clear, ident = res["HOTA"], res["CLEAR"], res["Identity"]
    return {
        "HOTA": round(100 * float(np.mean(hota["HOTA"])), 2),
        "MOTA": round(100 * float(clear["MOTA"]), 2),
        "IDF1": round(100 * float(ident["IDF1"]), 2),
        "IDSW": int(clear["IDSW"]),
        "FP": int(clear["CLR_FP"]),
        "FN": int(clear["CLR_FN"]),
        "IDs": tracks.ids(),
        "top_id": tracks.top_id(),
    }


def score_crossings(seq: Sequence, counted: list[tuple[float, str]], processed: list[int]) -> dict[str, dict[str, int]]:
    """Per direction: crossings counted at the right time (true), ground-truth ones not counted (missed), and
    counts with no ground-truth crossing near them (extra). ``counted`` holds (video time, direction) pairs with
    directions named as in the ground truth; only ground-truth crossings within the processed frames count."""
    last = max(processed) + 1 if processed else 0
    out: dict[str, dict[str, int]] = {}
    for direction in ("left_to_right", "right_to_left"):
        truth = [
            (c["frame"] - 1) / seq.fps for c in seq.crossings if c["direction"] == direction and c["frame"] <= last
        ]
        ours = [t for t, d in counted if d == direction]
        pairs = sorted((abs(a - b), i, j) for i, a in enumerate(truth) for j, b in enumerate(ours))
        used_truth: set[int] = set()
        used_ours: set[int] = set()
        for gap, i, j in pairs:
            if gap <= CROSSING_TOLERANCE_S and i not in used_truth and j not in used_ours:
                used_truth.add(i)
                used_ours.add(j)
        out[direction] = {
            "true": len(used_truth),
            "missed": len(truth) - len(used_truth),
            "extra": len(ours) - len(used_ours),
        }
    return out


def markdown_table(runs: list[dict[str, Any]]) -> str:
    """One row per sequence, rate and tracker: the track scores and the line counts (true/missed/extra)."""
    head = "| sequence | rate | tracker | HOTA | MOTA | IDF1 | ID sw | FP | FN | ids (top) | left→right | right→left |"
    rows = [head, "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|"]
    for run in runs:
        for name, s in run["trackers"].items():
            lines = s["lines"]
            cells = [
                run["sequence"],
                run["rate"],
                name,
                *(f"{s[k]:.1f}" for k in ("HOTA", "MOTA", "IDF1")),
                *(str(s[k]) for k in ("IDSW", "FP", "FN")),
                f"{s['IDs']} ({s['top_id']})",
                *(_count_cell(lines[d]) for d in ("left_to_right", "right_to_left")),
            ]
            rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


def _count_cell(c: dict[str, int]) -> str:
    return f"{c['true']} ✓ / {c['missed']} missed / {c['extra']} extra"
