"""Per-camera track-quality figures: from the inference process's counters to stats and Prometheus series."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from prometheus_client.core import Metric

from streamsrv.config.rules import RulesConfig
from streamsrv.errors import NotFoundError
from streamsrv.ipc.messages import CameraCounters
from streamsrv.rules import RuleOutput
from streamsrv.runtime.stats import CameraStatsTracker
from streamsrv.runtime.track_metrics import track_quality_metrics
from streamsrv.types import TrackQuality


def test_stats_work_out_rates_means_and_shares_across_an_inference_restart() -> None:
    stats = CameraStatsTracker("door")
    stats.on_inference_counters(CameraCounters(100, tracks=TrackQuality(10, 4, 6, 5, 50.0)))
    stats.sample_rates(now=0.0)
    stats.on_inference_restart()  # counters start again from zero in the new process
    stats.on_inference_counters(CameraCounters(20, tracks=TrackQuality(4, 2, 2, 1, 20.0)))
    stats.sample_rates(now=30.0)
    s = stats.snapshot()
    assert (s.frames_processed, s.tracks_confirmed, s.tracks_never_confirmed, s.tracks_ended) == (120, 8, 6, 6)
    assert s.track_seconds == 70.0
    assert s.track_mean_s == round(70.0 / 6, 2)
    assert s.tracks_never_confirmed_share == round(6 / 14, 4)
    assert s.tracks_confirmed_per_min == 4.0  # 2 more in 30 s


def test_a_camera_without_tracks_reports_zeros() -> None:
    s = CameraStatsTracker("empty").snapshot()
    assert (s.tracks_confirmed_per_min, s.track_mean_s, s.tracks_never_confirmed_share, s.relinks) == (0, 0, 0, 0)


def _families(server: Any) -> dict[str, Metric]:
    return {m.name: m for m in track_quality_metrics(server)}


def test_prometheus_series_per_camera_with_relinks_from_the_rule_engine() -> None:
    stats = CameraStatsTracker("door")
    stats.on_inference_counters(CameraCounters(tracks=TrackQuality(10, 4, 6, 5, 50.0)))
    gone = CameraStatsTracker("gone")  # removed between listing the stats and asking its rule engine

    def latest(camera_id: str) -> SimpleNamespace:
        if camera_id == "gone":
            raise NotFoundError(camera_id)
        return SimpleNamespace(output=RuleOutput(rules=RulesConfig(), relinks=3))

    server = SimpleNamespace(all_camera_stats=lambda: [stats.snapshot(), gone.snapshot()], latest=latest)
    families = _families(server)
    value = {name: {s.labels["camera"]: s.value for s in m.samples} for name, m in families.items()}
    assert value["streamsrv_camera_tracks_confirmed"]["door"] == 6
    assert value["streamsrv_camera_tracks_never_confirmed"]["door"] == 4
    assert value["streamsrv_camera_tracks_ended"]["door"] == 5
    assert value["streamsrv_camera_track_seconds"]["door"] == 50.0
    assert value["streamsrv_camera_relinks"] == {"door": 3}
    assert all(m.type == "counter" for m in families.values())
