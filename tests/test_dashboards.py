"""The Grafana dashboards query only metrics that the server exports, so a rename never leaves a panel blank.

Every query in dashboards/*.json (panel targets and template variables) is parsed with a PromQL parser. Each metric
it selects must appear, with every label the query matches or groups on, in a live ``/metrics`` scrape of the real
app: ``streamsrv serve`` with the compose config's model and rules section, a real file camera, the real model and a
real Redis.

GPU series are the exception: the server exports them only where NVML initialises, and CI has no NVIDIA GPU. Rather
than skipping those queries, they are checked against ``GPU_METRIC_NAMES`` (what ``GpuCollector`` can emit), and
``GpuCollector`` itself is run against a stand-in NVML module to show it emits exactly those names.
"""

from __future__ import annotations

import json
import re
import sys
import time
import types
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import promql_parser
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from streamsrv.runtime.metrics import GPU_METRIC_NAMES, GpuCollector
from tests.support.app_server import AppServer, model_section
from tests.support.processes import RedisServer

REPO_ROOT = Path(__file__).resolve().parent.parent
DASHBOARDS = sorted((REPO_ROOT / "dashboards").glob("*.json"))
# Added by Prometheus to every series it scrapes, so never in /metrics itself.
TARGET_LABELS = frozenset({"instance", "job"})
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
}
SCRAPE_TIMEOUT_S = 180.0  # model load and first batches on a busy 2-core machine


@dataclass(frozen=True)
class Query:
    dashboard: str
    panel: str
    expr: str


@dataclass(frozen=True)
class Selector:
    """One metric a query reads, and the labels the query needs it to have."""

    metric: str
    labels: frozenset[str]


def dashboard_queries(path: Path) -> list[Query]:
    dashboard = json.loads(path.read_text())
    queries = []

    def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for panel in items:
            yield panel
            yield from panels(panel.get("panels", []))  # a collapsed row holds its panels

    for panel in panels(dashboard["panels"]):
        queries += [Query(path.name, panel["title"], t["expr"]) for t in panel.get("targets", [])]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            queries.append(Query(path.name, f"${variable['name']}", variable["query"]["query"]))
    return queries


ALL_QUERIES = [q for path in DASHBOARDS for q in dashboard_queries(path)]
_LABEL_VALUES = re.compile(r"label_values\((?P<selector>.+),\s*(?P<label>\w+)\)")


def selectors(expr: str) -> list[Selector]:
    """The metrics ``expr`` selects. Grafana's ``label_values(selector, label)`` needs ``label`` on the selector."""
    if match := _LABEL_VALUES.fullmatch(expr):
        inner = selectors(match["selector"])
        return [Selector(s.metric, s.labels | {match["label"]}) for s in inner]
    # Grafana substitutes its variables before Prometheus sees the query: intervals, then label values.
    promql = re.sub(r"\$\{?\w+\}?", ".*", re.sub(r"\$__\w+", "5m", expr))
    found: list[Selector] = []

    def visit(node: promql_parser.Expr, grouping: frozenset[str]) -> None:
        """Depth first; ``grouping``: labels an enclosing ``by (...)`` groups on, which the selectors must carry."""
        match node:
            case promql_parser.VectorSelector():
                assert node.name, f"{expr!r}: a selector without a metric name"
                matched = {m.name for m in node.matchers.matchers}
                found.append(Selector(node.name, frozenset(matched) | grouping))
            case promql_parser.MatrixSelector():
                visit(node.vector_selector, grouping)
            case promql_parser.AggregateExpr():
                by = node.modifier
                labels = by.labels if by is not None and by.type == promql_parser.AggModifierType.By else []
                visit(node.expr, grouping | frozenset(labels))
                if node.param is not None:
                    visit(node.param, grouping)
            case promql_parser.BinaryExpr():
                visit(node.lhs, grouping)
                visit(node.rhs, grouping)
            case promql_parser.Call():
                for arg in node.args:
                    visit(arg, grouping)
            case promql_parser.ParenExpr() | promql_parser.UnaryExpr() | promql_parser.SubqueryExpr():
                visit(node.expr, grouping)
            case promql_parser.NumberLiteral() | promql_parser.StringLiteral():
                pass
            case _:
                raise AssertionError(f"{expr!r}: unexpected PromQL node {type(node).__name__}")

    visit(promql_parser.parse(promql), frozenset())
    return found


def queried() -> list[tuple[Query, Selector]]:
    return [(q, s) for q in ALL_QUERIES for s in selectors(q.expr)]


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


# --- the live scrape -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def redis() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def app(
    tmp_path_factory: pytest.TempPathFactory, person_model: Path, clip_720p: Path, redis: RedisServer
) -> Iterator[AppServer]:
    """The real server on the compose setup's rules (zones/concourse.yaml: a zone and a tripwire), one file camera."""
    config = tmp_path_factory.mktemp("dashboards") / "streamsrv.yaml"
    config.write_text(
        model_section(person_model)
        + f"""events:
  redis_url: {redis.url}
cameras:
  - id: concourse
    url: {clip_720p}
    loop: true
    detect_fps: 2
    rules: {REPO_ROOT / "zones" / "concourse.yaml"}
"""
    )
    server = AppServer(config)
    server.start()
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop(timeout=30)


def scrape(http: httpx.Client) -> dict[str, set[frozenset[str]]]:
    """Sample name -> the label-name sets its series have."""
    response = http.get("/metrics")
    response.raise_for_status()
    out: dict[str, set[frozenset[str]]] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            out.setdefault(sample.name, set()).add(frozenset(sample.labels))
    return out


def missing(scraped: dict[str, set[frozenset[str]]]) -> list[str]:
    """What the dashboards query that the scrape lacks: absent metrics, or metrics without a label a query needs."""
    problems = []
    for query, selector in queried():
        if selector.metric in GPU_METRIC_NAMES:  # checked against the collector above; no GPU here
            continue
        series = scraped.get(selector.metric)
        needed = selector.labels - TARGET_LABELS
        if not series:
            problems.append(f"{query.panel}: {selector.metric} is not in /metrics")
        elif not any(needed <= labels for labels in series):
            problems.append(f"{query.panel}: {selector.metric} has no series with labels {sorted(needed)}")
    return problems


@pytest.mark.slow
def test_every_dashboard_metric_is_in_a_live_scrape(app: AppServer) -> None:
    # Histograms, event counts and frame ages appear once frames have been processed: scrape until nothing is
    # missing, then report what still is.
    deadline = time.monotonic() + SCRAPE_TIMEOUT_S
    with app.client() as http:
        while (problems := missing(scrape(http))) and time.monotonic() < deadline:
            time.sleep(2.0)
    assert not problems, "\n".join(problems) + f"\nserver output:\n{app.output()}"
