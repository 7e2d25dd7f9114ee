"""The soak's summary, on made-up samples (the soak itself is tests/test_soak.py): each process's RSS slope after the
warm-up and whether it levels off, each cache's final size and growth, and process roles from the titles."""

from __future__ import annotations

from typing import Any

from benchmarks.soak import analyse, process_role


def made_up_sample(t_s: float) -> dict[str, Any]:
    hours = t_s / 3600
    return {
        "t_s": t_s,
        "processes": [
            {"role": "main", "rss_mb": 240 + 10 * hours, "fds": 30, "threads": 20},  # +10 MB/hour
            {"role": "inference", "rss_mb": 900.0, "fds": 40, "threads": 12},  # flat
        ],
        "tree": {
            "rss_mb": 1140 + 10 * hours,
            "fds": 70,
            "threads": 32,
            "processes": 2,
            "shm_rings": 1,
            "semaphores": 2,
        },
        "caches": {"snapshots": {"items": 100.0, "bytes": (1 + hours) * 2**20}, "events": {"items": 1000.0}},
        "cameras": {
            "c": {
                "processed_fps": 2.0,
                "frames_processed": int(t_s * 2),
                "frame_age_ms_p95": 50.0,
                "dropped_latest_wins": 0,
                "dropped_stale": 0,
                "reconnects": 0,
                "decoder_restarts": 0,
            }
        },
    }


def test_the_summary_gives_each_process_its_slope_and_each_cache_its_size() -> None:
    samples = [made_up_sample(t) for t in range(0, 7200, 60)]
    summary = analyse(samples, warmup_s=600, max_growth_pct=5.0)

    memory = summary["memory"]
    assert memory["main"]["slope_mb_per_hour"] == 10.0 and not memory["main"]["levels_off"]
    assert memory["inference"]["slope_mb_per_hour"] == 0.0 and memory["inference"]["levels_off"]
    assert set(memory) == {"tree", "main", "inference"}
    assert (
        summary["caches"]["snapshots"]["items"] == 100
        and summary["caches"]["snapshots"]["bytes_slope_mb_per_hour"] == 1.0
    )
    assert summary["caches"]["events"] == {"items": 1000.0, "bytes_slope_mb_per_hour": 0.0}


class Proc:
    def __init__(self, pid: int, cmdline: list[str]) -> None:
        self.pid, self._cmdline = pid, cmdline

    def cmdline(self) -> list[str]:
        return self._cmdline


def test_roles_come_from_the_process_titles() -> None:
    roles = [
        process_role(Proc(1, ["streamsrv: api"]), server_pid=1),  # type: ignore[arg-type]
        process_role(Proc(2, ["streamsrv: inference   "]), server_pid=1),  # padded to the old length  # type: ignore[arg-type]
        process_role(Proc(3, ["streamsrv:", "decoder", "door-1"]), server_pid=1),  # type: ignore[arg-type]
        process_role(Proc(4, ["python", "-c", "from multiprocessing.resource_tracker import main"]), 1),  # type: ignore[arg-type]
        process_role(Proc(5, ["sh"]), server_pid=1),  # type: ignore[arg-type]
    ]
    assert roles == ["main", "inference", "decoder:door-1", "resource_tracker", "other:5"]
