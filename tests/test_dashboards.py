"""The Grafana dashboards query only metrics that the server exports, so a rename never leaves a panel blank.

Every query in dashboards/*.json (panel targets and template variables) is parsed with a PromQL parser. Each metric
it selects must appear, with every label the query matches or groups on, in a live ``/metrics`` scrape of the real
app (tests/e2e/test_dashboards_live.py).

GPU series are the exception: the server exports them only where NVML initialises, and CI has no NVIDIA GPU. Rather
than skipping those queries, they are checked against ``GPU_METRIC_NAMES`` (what ``GpuCollector`` can emit), and
``GpuCollector`` itself is run against a stand-in NVML module to show it emits exactly those names.
"""

from __future__ import annotations

import json
import re
import sys
import types
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from streamsrv.runtime.metrics import GPU_METRIC_NAMES, GpuCollector
from tests.support.dashboards import ALL_QUERIES, DASHBOARDS, REPO_ROOT, TARGET_LABELS, queried, selectors

# What the issue asks the dashboards to show; a deleted panel fails here.
REQUIRED_METRICS = {
    "streamsrv_camera_ingest_fps",
    "streamsrv_camera_processed_fps",
    "streamsrv_camera_frames_dropped_total",
    "streamsrv_camera_reconnects_total",
    "streamsrv_camera_state",
    "streamsrv_inference_duration_seconds_bucket",
    "streamsrv_inference_batch_size_bucket",
    *GPU_METRIC_NAMES,
    "streamsrv_events_total",
    "streamsrv_line_crossings_total",
    "streamsrv_zone_occupancy",
    "streamsrv_jobs",
    "streamsrv_jobs_finished_total",
    "streamsrv_jobs_frames_analysed_total",
    "streamsrv_job_turnaround_seconds_bucket",
    "streamsrv_cache_bytes",
    "streamsrv_cache_items",
}


# --- the dashboards themselves -------------------------------------------------------------------------------------


def test_there_are_dashboards() -> None:
    assert [p.name for p in DASHBOARDS] == ["streamsrv.json"]


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_is_importable(path: Path) -> None:
    dashboard = json.loads(path.read_text())
    assert dashboard["uid"] and dashboard["title"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    # Every query goes to the datasource variable, so the dashboard works in any Grafana, provisioned or imported.
    [datasource] = [v for v in dashboard["templating"]["list"] if v["type"] == "datasource"]
    assert datasource["query"] == "prometheus"
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            assert target["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]


def test_every_query_parses_and_names_its_metrics() -> None:
    assert ALL_QUERIES
    for query in ALL_QUERIES:
        assert selectors(query.expr), f"{query.panel}: {query.expr!r} selects no metric"


def test_dashboards_show_what_the_issue_asks_for() -> None:
    assert {s.metric for _, s in queried()} >= REQUIRED_METRICS


def test_every_query_follows_the_node_selector() -> None:
    # In a cluster each node is one Prometheus target, labelled `node` by the scrape job's relabeling.
    for query in ALL_QUERIES:
        if '$instance"' in query.expr and query.panel != "$node":
            assert 'node=~"$node"' in query.expr, f"{query.panel}: {query.expr!r} ignores the node selector"
    [dashboard] = [json.loads(p.read_text()) for p in DASHBOARDS]
    [node] = [v for v in dashboard["templating"]["list"] if v["name"] == "node"]
    assert node["includeAll"] and node["allValue"] == ".*"  # All matches servers without the label too


def test_cluster_totals_are_broken_down_by_node() -> None:
    by_node = {s.metric for q, s in queried() if "by (node)" in q.expr and "node" in s.labels}
    assert by_node >= {
        "streamsrv_camera_state",
        "streamsrv_camera_processed_fps",
        "streamsrv_events_total",
        "streamsrv_inference_duration_seconds_sum",  # seconds in forward passes per second: inference busy
    }


def test_every_queried_metric_is_documented() -> None:
    documented = (REPO_ROOT / "docs" / "metrics.md").read_text()
    for query, selector in queried():
        family = re.sub(r"_(bucket|sum|count)$", "", selector.metric)
        assert f"`{family}" in documented, f"{query.panel}: {selector.metric} is not in docs/metrics.md"


def test_gpu_queries_use_names_the_collector_emits() -> None:
    # CI has no GPU, so the live scrape below cannot show these: check them against the collector's own list.
    gpu = {s.metric for _, s in queried() if s.metric.startswith("streamsrv_gpu_")}
    assert gpu == set(GPU_METRIC_NAMES)
    for query, selector in queried():
        if selector.metric in GPU_METRIC_NAMES:
            assert selector.labels - TARGET_LABELS <= {"gpu"}, f"{query.panel}: {query.expr}"


# --- GpuCollector, against a stand-in NVML -------------------------------------------------------------------------


class FakeNvmlError(Exception):
    pass


def fake_nvml(gpus: list[tuple[int, int, int] | None], init_error: bool = False) -> types.SimpleNamespace:
    """A pynvml with ``gpus`` as (utilisation %, used bytes, total bytes); None for a GPU whose queries fail.

    Its ``state`` counts initialisations not yet shut down.
    """
    state = {"initialised": 0}

    def init() -> None:
        if init_error:
            raise FakeNvmlError("NVML Shared Library Not Found")
        state["initialised"] += 1

    def shutdown() -> None:
        state["initialised"] -= 1

    def device(index: int) -> tuple[int, int, int]:
        found = gpus[index]
        if found is None:
            raise FakeNvmlError("GPU is lost")
        return found

    return types.SimpleNamespace(
        NVMLError=FakeNvmlError,
        nvmlInit=init,
        nvmlShutdown=shutdown,
        nvmlDeviceGetCount=lambda: len(gpus),
        nvmlDeviceGetHandleByIndex=device,
        nvmlDeviceGetUtilizationRates=lambda h: types.SimpleNamespace(gpu=h[0], memory=0),
        nvmlDeviceGetMemoryInfo=lambda h: types.SimpleNamespace(used=h[1], total=h[2], free=h[2] - h[1]),
        state=state,
    )


def collect(collector: GpuCollector) -> dict[tuple[str, str], float]:
    registry = CollectorRegistry()
    registry.register(collector)
    text = generate_latest(registry).decode()
    return {
        (sample.name, sample.labels["gpu"]): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_gpu_collector_reports_every_gpu_nvml_sees(monkeypatch: pytest.MonkeyPatch) -> None:
    nvml = fake_nvml([(37, 2 * 2**30, 80 * 2**30), None, (0, 0, 24 * 2**30)])
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    collector = GpuCollector()
    samples = collect(collector)
    assert {name for name, _ in samples} == set(GPU_METRIC_NAMES)
    assert samples == {
        ("streamsrv_gpu_utilization_ratio", "0"): 0.37,
        ("streamsrv_gpu_memory_used_bytes", "0"): 2 * 2**30,
        ("streamsrv_gpu_memory_total_bytes", "0"): 80 * 2**30,
        # GPU 1 fails its queries: it is left out of this scrape, the others are not
        ("streamsrv_gpu_utilization_ratio", "2"): 0.0,
        ("streamsrv_gpu_memory_used_bytes", "2"): 0.0,
        ("streamsrv_gpu_memory_total_bytes", "2"): 24 * 2**30,
    }
    collector.close()
    assert nvml.state == {"initialised": 0}


def test_gpu_series_are_absent_where_nvml_does_not_initialise(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", fake_nvml([(50, 1, 2)], init_error=True))
    assert collect(GpuCollector()) == {}
