"""Every metric the Grafana dashboards query is in a live ``/metrics`` scrape of the real app, with every label the
query matches or groups on: ``streamsrv serve`` with the compose config's model and rules section, a real file
camera, the real model and a real Redis. GPU series are checked in tests/test_dashboards.py (CI has no GPU).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from streamsrv.runtime.metrics import GPU_METRIC_NAMES
from tests.support.app_server import AppServer, AppServers, model_section
from tests.support.dashboards import CLUSTER_METRIC_PREFIX, REPO_ROOT, TARGET_LABELS, queried
from tests.support.processes import RedisServer

SCRAPE_TIMEOUT_S = 180.0  # model load and first batches on a busy 2-core machine


@pytest.fixture(scope="module")
def redis() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def app(module_app_factory: AppServers, person_model: Path, clip_720p: Path, redis: RedisServer) -> AppServer:
    """The real server on the compose setup's rules (zones/concourse.yaml: a zone and a tripwire), one file camera."""
    return module_app_factory(
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
        if selector.metric.startswith(CLUSTER_METRIC_PREFIX):  # a single server has none: tests/test_cluster_view.py
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
