"""benchmarks/streams_per_gpu.py: the ramp logic, and a short end-to-end run through the real pipeline.

The end-to-end run uses the untrained YOLOv8n (same compute as the released weights), the 360p clip and
a few seconds per step. Whether a step passes depends on the machine, so only the report's shape and its
internal consistency are checked, never timings.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.gpu_reference import GPUS, gpu_for_device_name, yolov8_variant
from benchmarks.streams_per_gpu import ramp_counts
from streamsrv.decode.hwaccel import choose_hw_decoder

REPO = Path(__file__).resolve().parent.parent

STEP_FIELDS = {
    "streams": int,
    "detect_fps": float,
    "motion_gating": bool,
    "seconds": float,
    "passed": bool,
    "failed": list,
    "fps_per_stream_min": float,
    "fps_per_stream_mean": float,
    "fps_per_stream": dict,
    "detector_fps_per_stream_mean": float,
    "skipped_no_motion": int,
    "skipped_no_motion_fraction": float,
    "pipeline_fps": float,
    "latency_ms_p50": float,
    "latency_ms_p95": float,
    "frame_age_ms_p50": float,
    "frame_age_ms_p95": float,
    "drop_fraction": float,
    "dropped": int,
    "batch_size_mean": float,
    "batch_size_max": int,
    "batch_sizes": dict,
    "inference_ms_mean": float,
    "inference_ms_per_frame": float,
    "decode_ms_per_frame": float,
    "decode_cores_per_stream": float,
    "cpu_percent_mean": float,
    "cpu_percent_max": float,
    "cores": dict,
    "load_average": list,
    "decoders": list,
    "rss_mb": dict,
}
GPU_FIELDS = ("gpu_util_percent_mean", "gpu_util_percent_max", "gpu_memory_mb_max")


def run_ramp(capacity: int, max_streams: int = 64) -> list[int]:
    """The counts the ramp visits on a machine that sustains exactly ``capacity`` streams."""
    passed: dict[int, bool] = {}
    visited = []
    while (n := ramp_counts(passed, max_streams)) is not None:
        visited.append(n)
        passed[n] = n <= capacity
    return visited


def test_ramp_doubles_until_a_failure_then_bisects() -> None:
    assert run_ramp(5) == [1, 2, 4, 8, 6, 5]
    assert run_ramp(8) == [1, 2, 4, 8, 16, 12, 10, 9]
    assert run_ramp(0) == [1]
    assert run_ramp(1) == [1, 2]


def test_ramp_stops_at_the_cap() -> None:
    assert run_ramp(100, max_streams=10) == [1, 2, 4, 8, 10]


def test_gpu_reference_names() -> None:
    assert yolov8_variant("../shared/models/person_yolov8s.pt") == "s"
    assert yolov8_variant("yolov8n.yaml") == "n"
    assert yolov8_variant("resnet50.pt") is None
    assert gpu_for_device_name("Tesla T4") is GPUS["t4"]
    assert gpu_for_device_name("NVIDIA A10G") is GPUS["a10g"]
    assert gpu_for_device_name("NVIDIA A10") is None
    assert gpu_for_device_name("NVIDIA H100 80GB HBM3") is None
    for gpu in GPUS.values():
        assert gpu.sources and all(s.url.startswith("https://") for s in gpu.sources)


@pytest.fixture(scope="module")
def short_run(tmp_path_factory: pytest.TempPathFactory, shared_dir: Path) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("streams_per_gpu")
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.streams_per_gpu",
        "--model=yolov8n.yaml",
        "--scene=static",
        "--device=cpu",
        "--threads=2",
        "--steps=1,2",
        "--seconds=4",
        "--warmup=1",
        "--raw-seconds=2",
        "--max-batch=2",
        "--saturate=2",
        "--plan=t4,a10g",
        f"--out-dir={out}",
    ]
    env = {**os.environ, "STREAMSRV_SHARED": str(shared_dir)}
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=400, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return out, done.stdout


@pytest.mark.slow
def test_short_run_writes_a_report_with_the_documented_fields(short_run: tuple[Path, str]) -> None:
    out, _ = short_run
    report = json.loads((out / "streams_per_gpu.json").read_text())
    assert set(report) == {
        "meta",
        "criteria",
        "steps",
        "capacity",
        "gating",
        "raw",
        "saturation",
        "pipeline_over_raw",
        "host_costs",
        "plan",
    }
    assert [s["streams"] for s in report["steps"]] == [1, 2]
    gating = report["gating"]
    assert set(gating) == {"off", "on"} and gating["off"]["steps"] == report["steps"]
    assert [s["streams"] for s in gating["on"]["steps"]] == [1, 2]
    assert report["capacity"]["streams"] == gating["off"]["capacity"] and not report["capacity"]["motion_gating"]
    for mode, ramp in gating.items():
        assert all(s["motion_gating"] == (mode == "on") for s in ramp["steps"])
        assert ramp["capacity"] == max([s["streams"] for s in ramp["steps"] if s["passed"]], default=0)
    # the still room: without gating nothing is held back; with it some due frames are
    assert all(s["skipped_no_motion"] == 0 for s in gating["off"]["steps"])
    assert sum(s["skipped_no_motion"] for s in gating["on"]["steps"]) > 0
    assert report["meta"]["scene"] == "static" and report["meta"]["clip"]["path"].endswith("room_walkins_432p.mp4")
    for step in [*report["steps"], *gating["on"]["steps"], report["saturation"]]:
        for name, kind in STEP_FIELDS.items():
            assert isinstance(step[name], kind | int if kind is float else kind), name
        for name in GPU_FIELDS:
            assert step[name] is None or isinstance(step[name], float)
        assert step["passed"] == (step["failed"] == [])
        assert sorted(step["fps_per_stream"]) == [f"cam{i}" for i in range(step["streams"])]
        assert all(1 <= int(b) <= 2 for b in step["batch_sizes"])
        assert set(step["cores"]) == {"main", "inference", "decoders", "other"}
        # the decoder choice travels decoder process -> supervisor -> camera stats
        assert step["decoders"] == [choose_hw_decoder("auto") or "cpu"]
    passed = [s["streams"] for s in report["steps"] if s["passed"]]
    assert report["capacity"]["streams"] == max(passed, default=0)
    assert report["saturation"]["detect_fps"] == 10.0  # every frame of the 10 fps room clip
    raw = report["raw"]
    assert raw["batch_size"] == 2
    assert len(raw["rounds_frames_per_s"]) == 2 and raw["frames_per_s"] == max(raw["rounds_frames_per_s"]) > 0
    assert report["pipeline_over_raw"] == pytest.approx(
        report["saturation"]["pipeline_fps"] / report["raw"]["frames_per_s"], abs=1e-3
    )
    assert report["meta"]["backend"] == "ultralytics-torch-fp32"
    assert report["meta"]["input_shape"] == [384, 640]  # 768x432 letterboxed like 16:9 360p
    for name in ("preprocess_ms", "forward_ms", "postprocess_ms", "track_ms", "host_ms"):
        assert report["host_costs"][name] >= 0


@pytest.mark.slow
def test_short_run_projects_t4_and_a10g_with_sources(short_run: tuple[Path, str]) -> None:
    out, stdout = short_run
    report = json.loads((out / "streams_per_gpu.json").read_text())
    here = gpu_for_device_name(report["meta"]["gpu_name"] or "")
    assert [p["gpu"] for p in report["plan"]] == ["t4", "a10g"]
    for p in report["plan"]:
        if here is not None and here.key == p["gpu"]:
            assert p["kind"] == "MEASURED"
            continue
        assert p["kind"] == "PROJECTION"
        assert isinstance(p["streams"], int)
        assert p["streams"] == min(p["gpu_streams"], p["cpu_streams"])
        assert p["sources"] and p["assumptions"]
        assert f"PROJECTION {GPUS[p['gpu']].name}" in stdout
    a10g, t4 = report["plan"][1], report["plan"][0]
    if a10g["kind"] == t4["kind"] == "PROJECTION":
        assert a10g["gpu_img_per_s"] == pytest.approx(t4["gpu_img_per_s"] * GPUS["a10g"].relative_to_t4, rel=1e-3)


@pytest.mark.slow
def test_short_run_writes_csv_png_and_prints_the_table(short_run: tuple[Path, str]) -> None:
    out, stdout = short_run
    with (out / "streams_per_gpu.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [(r["kind"], r["streams"]) for r in rows] == [
        ("ramp", "1"),
        ("ramp", "2"),
        ("ramp_gated", "1"),
        ("ramp_gated", "2"),
        ("saturation", "2"),
    ]
    assert {"latency_ms_p95", "fps_per_stream_min", "decode_ms_per_frame", "cores_decoders"} <= set(rows[0])
    assert (out / "streams_per_gpu.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| streams | fps/stream min |" in stdout
    assert "capacity:" in stdout and "pipeline/raw" in stdout
    assert "motion gating off (static scene)" in stdout and "motion gating on (static scene)" in stdout
