"""What ``streams_per_gpu`` writes and prints: the CSV of steps, the PNG plot and the capacity tables."""

from __future__ import annotations

import argparse
import csv
import textwrap
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks.gpu_reference import GPUS

if TYPE_CHECKING:  # streams_per_gpu imports this module
    from benchmarks.streams_per_gpu import Step


def write_csv(path: Path, ramps: dict[bool, list[Step]], saturation: Step | None) -> None:
    """A row per step: kind ``ramp`` (motion gating off), ``ramp_gated`` (on), ``saturation``."""
    rows = [("ramp_gated" if gated else "ramp", s) for gated, steps in ramps.items() for s in steps]
    rows += [("saturation", saturation)] if saturation else []
    flat = [k for k, v in asdict(rows[0][1]).items() if not isinstance(v, dict | list)] if rows else []
    core_kinds = ("decoders", "inference", "main", "other")
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["kind", *flat, "failed", "decoders", *(f"cores_{k}" for k in core_kinds)])
        for kind, step in rows:
            row = asdict(step)
            w.writerow(
                [kind, *(row[k] for k in flat), "; ".join(step.failed), " ".join(step.decoders)]
                + [step.cores.get(k, "") for k in core_kinds]
            )


def plot(path: Path, steps: list[Step], args: argparse.Namespace, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    ordered = sorted(steps, key=lambda s: s.streams)
    n = [s.streams for s in ordered]
    fig, (ax_fps, ax_lat) = plt.subplots(2, 1, figsize=(8, 7), sharex=True)
    ax_fps.plot(n, [s.fps_per_stream_mean for s in ordered], "o-", label="mean per stream")
    ax_fps.plot(n, [s.fps_per_stream_min for s in ordered], "s--", label="slowest stream")
    ax_fps.axhline(args.fps, color="grey", lw=0.8, label=f"target {args.fps:g} fps")
    ax_fps.axhline(args.fps * (1 - args.fps_tolerance), color="grey", ls=":", lw=0.8, label="pass threshold")
    ax_fps.set_ylabel("fps per stream")
    ax_lat.plot(n, [s.latency_ms_p50 for s in ordered], "o-", label="latency p50")
    ax_lat.plot(n, [s.latency_ms_p95 for s in ordered], "s--", label="latency p95")
    ax_lat.axhline(args.budget_ms, color="red", lw=0.8, label=f"budget {args.budget_ms:g} ms")
    ax_lat.set_ylabel("ms (decoded -> result)")
    ax_lat.set_xlabel("streams")
    for ax in (ax_fps, ax_lat):
        for s in ordered:
            ax.axvspan(s.streams - 0.15, s.streams + 0.15, color="green" if s.passed else "red", alpha=0.08)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    ax_lat.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle("\n".join(textwrap.wrap(title, 100)), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def print_tables(report: dict[str, Any]) -> None:
    meta = report["meta"]
    print(f"\n{meta['title']}\n")
    for mode, ramp in report["gating"].items():
        print(f"motion gating {mode}:\n")
        print(
            "| streams | fps/stream min | mean | detector fps/stream | no motion | latency p50 ms | p95 ms | drops "
            "| batch mean | infer ms/batch | decode ms/frame | CPU % | GPU % | GPU MB | pass |"
        )
        print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
        for s in sorted(ramp["steps"], key=lambda s: s["streams"]):
            verdict = "yes" if s["passed"] else "no: " + "; ".join(s["failed"])
            gpu = "-" if s["gpu_util_percent_mean"] is None else f"{s['gpu_util_percent_mean']:.0f}"
            mem = "-" if s["gpu_memory_mb_max"] is None else f"{s['gpu_memory_mb_max']:.0f}"
            print(
                f"| {s['streams']} | {s['fps_per_stream_min']:.2f} | {s['fps_per_stream_mean']:.2f} "
                f"| {s['detector_fps_per_stream_mean']:.2f} | {s['skipped_no_motion_fraction']:.0%} "
                f"| {s['latency_ms_p50']:.0f} | {s['latency_ms_p95']:.0f} | {s['drop_fraction']:.1%} "
                f"| {s['batch_size_mean']:.2f} | {s['inference_ms_mean']:.0f} | {s['decode_ms_per_frame']:.2f} "
                f"| {s['cpu_percent_mean']:.0f} | {gpu} | {mem} | {verdict} |"
            )
        print()
    cap = report["capacity"]
    print(f"\ncapacity: {cap['streams']} streams at {cap['fps']:g} fps (p95 latency <= {cap['budget_ms']:g} ms)")
    for mode, ramp in report["gating"].items():
        print(
            f"motion gating {mode} ({report['meta']['scene']} scene): {ramp['capacity']} streams; "
            f"{ramp['detector_fps_per_stream_mean']:.2f} detector calls per camera-second, "
            f"{ramp['skipped_no_motion_fraction_mean']:.0%} of due frames held back for no motion"
        )
    sat, raw = report["saturation"], report["raw"]
    if sat is not None:
        print(
            f"saturation: {sat['streams']} cameras at {sat['detect_fps']:g} fps -> pipeline {sat['pipeline_fps']:.1f} "
            f"frames/s, raw batched {raw['frames_per_s']:.1f} img/s (batch {raw['batch_size']}): "
            f"pipeline/raw = {report['pipeline_over_raw']:.2f}"
        )
    for p in report["plan"]:
        print(f"\n{p['kind']} {GPUS[p['gpu']].name}: {p['streams']} streams", end="")
        if p.get("limited_by"):
            print(
                f" (limited by {p['limited_by']}: GPU {p['gpu_streams']}, CPU {p['cpu_streams']}; "
                f"{p['gpu_img_per_s']} img/s, {p['per_stream_cores']} cores/stream on {p['host']})"
            )
        else:
            print(f" - {p.get('note', '')}")
        for a in p.get("assumptions", []):
            print(f"  assumption: {a}")
        for src in p.get("sources", []):
            print(f"  source: {src['title']} <{src['url']}>")
