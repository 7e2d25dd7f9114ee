"""Cache sizes and job turnaround as Prometheus series: ``streamsrv_cache_*{cache}`` from every registered reader,
``streamsrv_job_turnaround_seconds`` from each job that ends. (The server's own caches are checked in
tests/test_server_snapshots.py; a live scrape in tests/test_dashboards.py and tests/e2e.)"""

from __future__ import annotations

import numpy as np
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from streamsrv.api.app import job_results_size
from streamsrv.api.routers.preview import preview_cache_size
from streamsrv.config.rules import RulesConfig
from streamsrv.jobs.store import Job, JobState, JobStats
from streamsrv.preview.frame import PreviewFrame
from streamsrv.preview.hub import PreviewStats
from streamsrv.runtime.caches import CacheCollector, Caches, CacheSize
from streamsrv.runtime.job_metrics import JobTurnaround


def samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_every_reader_becomes_a_series_and_a_removed_one_goes() -> None:
    caches = Caches()
    caches.add(lambda: [CacheSize(cache="snapshots", items=3, bytes=300, max_items=1000, max_bytes=4096)])
    remove = caches.add(lambda: [CacheSize(cache="events", items=7, max_items=1000)])
    registry = CollectorRegistry()
    registry.register(CacheCollector(caches))

    got = samples(registry)
    assert got[("streamsrv_cache_items", (("cache", "snapshots"),))] == 3
    assert got[("streamsrv_cache_bytes", (("cache", "snapshots"),))] == 300
    assert got[("streamsrv_cache_max_bytes", (("cache", "snapshots"),))] == 4096
    assert got[("streamsrv_cache_items", (("cache", "events"),))] == 7
    assert ("streamsrv_cache_bytes", (("cache", "events"),)) not in got  # not measured: no series, not a 0

    remove()
    assert [c.cache for c in caches.sizes()] == ["snapshots"]


def test_job_results_and_preview_frames_are_counted() -> None:
    stats = JobStats(
        queued=1, running=1, done=2, failed=1, rejected=0, completed=3, finished={}, frames_analysed=0,
        evicted=0, expired=0, result_bytes=5000, result_store_bytes=2**20,
    )  # fmt: skip
    assert job_results_size(stats) == CacheSize(cache="job_results", items=3, bytes=5000, max_bytes=2**20)

    frame = PreviewFrame(1, np.zeros((36, 64, 3), np.uint8), 75, live=True)
    without_jpeg = frame.nbytes
    assert without_jpeg == 36 * 64 * 3 and frame.nbytes < without_jpeg + len(frame.jpeg()) + 1
    preview = preview_cache_size(PreviewStats(feeds=1, viewers=1, buffered_frames=1, buffered_bytes=frame.nbytes))
    assert (preview.cache, preview.items, preview.bytes) == ("preview", 1, frame.nbytes)


class FakeJobs:
    def __init__(self) -> None:
        self.finished_listeners: list = []  # type: ignore[type-arg]


def test_job_turnaround_is_observed_per_outcome_from_submission_to_end() -> None:
    jobs = FakeJobs()
    registry = CollectorRegistry()
    turnaround = JobTurnaround(jobs, registry)  # type: ignore[arg-type]
    before = samples(registry)
    assert before[("streamsrv_job_turnaround_seconds_count", (("outcome", "done"),))] == 0  # there from the start

    for state, took_s in ((JobState.DONE, 12.0), (JobState.DONE, 40.0), (JobState.FAILED, 3.0)):
        job = Job(id="j", state=state, video="clip.mp4", detect_fps=None, rules=RulesConfig(), created_ts=1000.0)
        job.finished_ts = 1000.0 + took_s
        for listener in jobs.finished_listeners:
            listener(job)

    got = samples(registry)
    assert got[("streamsrv_job_turnaround_seconds_count", (("outcome", "done"),))] == 2
    assert got[("streamsrv_job_turnaround_seconds_sum", (("outcome", "done"),))] == 52.0
    assert got[("streamsrv_job_turnaround_seconds_bucket", (("le", "30.0"), ("outcome", "done")))] == 1
    assert got[("streamsrv_job_turnaround_seconds_count", (("outcome", "failed"),))] == 1
    turnaround.close()
    assert jobs.finished_listeners == []
