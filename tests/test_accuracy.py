"""The accuracy guard: tracking and line counts on TUD-Campus, against the figures recorded in the repository.

Runs ``benchmarks/accuracy.py``'s streamsrv side (what ``streamsrv analyze`` does) on the 71-frame sequence from
``../shared`` (never copied here: its licence is non-commercial), at every frame and at 5 fps, on the CPU as the
baseline was recorded. Fails when IDF1 or HOTA falls more than 2 points below ``benchmarks/accuracy_baseline.json``,
or a line count misses or adds a crossing the baseline did not. After a change that really improves the scores,
record them again:

    python benchmarks/accuracy.py ../shared/media/mot/TUD-Campus --trackers streamsrv --device cpu \\
        --json benchmarks/accuracy_baseline.json
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from benchmarks.accuracy import evaluate

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

BASELINE = Path(__file__).resolve().parent.parent / "benchmarks" / "accuracy_baseline.json"
MAX_DROP_POINTS = 2.0


@pytest.fixture(scope="module")
def tud_campus(shared_dir: Path) -> Path:
    path = shared_dir / "media" / "mot" / "TUD-Campus"
    if not (path / "gt" / "gt.txt").exists():
        pytest.fail(f"TUD-Campus ground truth not found at {path}; see ../shared/media/mot/README.md")
    return path


@pytest.fixture(scope="module")
def baseline() -> dict[str, dict[str, Any]]:
    recorded = json.loads(BASELINE.read_text())
    return {run["rate"]: run["trackers"]["streamsrv"] for run in recorded["runs"]}


@pytest.fixture(scope="module")
def measured(tud_campus: Path, person_model: Path, baseline: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    rates = [None, 5.0]
    runs = evaluate(tud_campus, person_model, rates, device="cpu", trackers=("streamsrv",))
    got = {run["rate"]: run["trackers"]["streamsrv"] for run in runs}
    assert set(got) == set(baseline), f"the baseline has runs {sorted(baseline)}, this run {sorted(got)}"
    return got


@pytest.mark.parametrize("metric", ["IDF1", "HOTA"])
def test_tracking_is_no_worse_than_recorded(
    metric: str, measured: dict[str, dict[str, Any]], baseline: dict[str, dict[str, Any]]
) -> None:
    for rate, scores in measured.items():
        floor = baseline[rate][metric] - MAX_DROP_POINTS
        assert scores[metric] >= floor, (
            f"{rate}: {metric} {scores[metric]} < {floor} (recorded {baseline[rate][metric]})"
        )


def test_line_counts_are_no_worse_than_recorded(
    measured: dict[str, dict[str, Any]], baseline: dict[str, dict[str, Any]]
) -> None:
    for rate, scores in measured.items():
        for direction, counts in scores["lines"].items():
            recorded = baseline[rate]["lines"][direction]
            for kind in ("missed", "extra"):
                assert counts[kind] <= recorded[kind], f"{rate} {direction}: {counts} (recorded {recorded})"
