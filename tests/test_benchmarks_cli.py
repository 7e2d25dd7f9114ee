"""Every script in benchmarks/ starts both ways the docs name it: ``python benchmarks/x.py`` and
``python -m benchmarks.x``. Run as a file, from another directory and with no PYTHONPATH, the repository root is not
on sys.path unless the script puts it there (``from benchmarks...`` and ``from tests...`` failed before)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.pipeline_throughput import config, inference_section, parse_args
from tests.conftest import REPO_ROOT

SCRIPTS = sorted(p for p in (REPO_ROOT / "benchmarks").glob("*.py") if 'if __name__ == "__main__":' in p.read_text())


def run_help(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(
        [sys.executable, *argv, "--help"], cwd=cwd, env=env, capture_output=True, text=True, timeout=180
    )


def test_every_script_is_found() -> None:
    assert {p.stem for p in SCRIPTS} >= {"streams_per_gpu", "pipeline_throughput", "backends", "soak", "jobs_load"}


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.stem)
def test_script_runs_as_a_file_from_anywhere(script: Path, tmp_path: Path) -> None:
    result = run_help([str(script)], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage:")


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.stem)
def test_script_runs_as_a_module(script: Path) -> None:
    result = run_help(["-m", f"benchmarks.{script.stem}"], cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage:")


def test_pipeline_throughput_runs_streamsrv_on_the_chosen_backend(clip_360p: Path) -> None:
    args = parse_args(["--backend", "openvino", "--precision", "bf16", "--clip", str(clip_360p), "--threads", "1"])
    cfg = config(args.model, args.clip, 2, inference_section(args), args.decode_threads)
    assert (cfg.inference.backend, cfg.inference.precision, cfg.inference.threads) == ("openvino", "bf16", 1)
    assert [cam.url for cam in cfg.cameras] == [str(clip_360p)] * 2

    int8 = parse_args(["--backend", "openvino", "--precision", "int8", "--clip", str(clip_360p)])
    assert config(int8.model, int8.clip, 1, inference_section(int8), 1).inference.calibration == str(clip_360p)


def test_pipeline_throughput_refuses_int8_off_openvino(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args(["--backend", "onnxruntime", "--precision", "int8"])
    assert "--precision int8 needs --backend openvino" in capsys.readouterr().err
