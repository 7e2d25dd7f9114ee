"""The CI variant of ``benchmarks/soak.py``: two RTSP cameras and Redis through ``streamsrv serve`` for two
minutes; nothing may keep growing and SIGTERM must leave nothing behind. The figures in docs/reliability.md come
from the 30-minute run of the same script."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.rtsp]

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(600)
def test_two_minute_soak_finds_nothing_growing(tmp_path: Path, clip_360p: Path, person_model: Path) -> None:
    out = tmp_path / "soak.json"
    argv = [sys.executable, "-m", "benchmarks.soak", "--duration", "120", "--cameras", "2", "--redis"]
    argv += ["--clip", str(clip_360p), "--model", str(person_model), "--out", str(out)]
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = proc.communicate(timeout=540)
    except subprocess.TimeoutExpired:
        # SIGINT lets the soak stop the server, RTSP and Redis it started (they run in their own sessions).
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
        pytest.fail(f"the soak did not finish in 540 s:\n{stderr[-3000:]}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    assert out.exists(), stderr[-3000:]
    report = json.loads(out.read_text())
    failed = [c for c in report["summary"]["checks"] if not c["ok"]]
    assert proc.returncode == 0 and report["passed"], f"{json.dumps(failed, indent=1)}\n{stderr[-3000:]}"
    assert json.loads(stdout)["passed"] is True

    # What it watched: every process of the tree, shared memory, and both cameras, all through the window.
    samples = report["samples"]
    assert len(samples) >= 20
    roles = {p["role"] for p in samples[-1]["processes"]}
    assert {"main", "inference", "decoder:soak0", "decoder:soak1", "resource_tracker"} <= roles, roles
    assert samples[-1]["tree"]["shm_rings"] == 2 and samples[-1]["tree"]["semaphores"] >= 1
    series = {c["series"] for c in report["summary"]["checks"]}
    for expected in ("tree.rss_mb", "inference.rss_mb", "tree.fds", "tree.threads", "tree.semaphores"):
        assert expected in series
    assert {"shutdown.shm_rings_left", "shutdown.exit_code"} <= series
    for camera in ("soak0", "soak1"):
        summary = report["summary"]["cameras"][camera]
        assert summary["processed_fps_mean"] > 0 and summary["decoder_restarts"] == 0, summary
        assert samples[-1]["cameras"][camera]["state"] == "online"
    assert "[soak] PASSED" in stderr
