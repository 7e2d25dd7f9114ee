"""Prometheus metrics of clip analysis jobs: the queue's states and counters at scrape time, and how long jobs take
from submission to their end (a histogram observed as each job finishes). Names and meanings: docs/metrics.md.

Example:
    >>> registry = CollectorRegistry()
    >>> registry.register(JobCollector(job_manager))  # doctest: +SKIP
    >>> turnaround = JobTurnaround(job_manager, registry)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from streamsrv.jobs.manager import JobManager
from streamsrv.jobs.store import Job, JobState

# Jobs range from a few seconds (a short clip) to jobs.max_video_s of a stream and a long queue before it.
TURNAROUND_BUCKETS_S = (1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600)
OUTCOMES = (JobState.DONE, JobState.FAILED)


class JobCollector(Collector):
    """Clip analysis jobs, from one ``JobManager.stats()`` snapshot, so states and counters agree with each other
    and with ``GET /api/jobs``."""

    def __init__(self, jobs: JobManager) -> None:
        self.jobs = jobs

    def collect(self) -> Iterator[Metric]:
        stats = self.jobs.stats()
        states = GaugeMetricFamily(
            "streamsrv_jobs",
            "Jobs kept now, by state: queued (the queue's depth), running, and done or failed (kept for "
            "jobs.result_ttl_s).",
            labels=["state"],
        )
        by_state = {
            JobState.QUEUED: stats.queued,
            JobState.RUNNING: stats.running,
            JobState.DONE: stats.done,
            JobState.FAILED: stats.failed,
        }
        for state, n in by_state.items():
            states.add_metric([state.value], n)
        yield states
        finished = CounterMetricFamily(
            "streamsrv_jobs_finished",
            "Jobs that ended, by outcome: done, failed, or cancelled (deleted while queued or running).",
            labels=["outcome"],
        )
        for outcome, n in stats.finished.items():
            finished.add_metric([outcome], n)
        yield finished
        yield CounterMetricFamily(
            "streamsrv_jobs_frames_analysed",
            "Frames jobs analysed (inferred, tracked and run through the job's rules).",
            value=stats.frames_analysed,
        )
        yield CounterMetricFamily(
            "streamsrv_jobs_rejected", "Job submissions refused with 429: the queue was full.", value=stats.rejected
        )


class JobTurnaround:
    """``streamsrv_job_turnaround_seconds``: submission to end of every job that ends done or failed here."""

    def __init__(self, jobs: JobManager, registry: CollectorRegistry) -> None:
        self._jobs = jobs
        self.histogram = Histogram(
            "streamsrv_job_turnaround_seconds",
            "Time from a job's submission to its end (waiting in the queue and running), by outcome: done, failed.",
            labelnames=["outcome"],
            buckets=TURNAROUND_BUCKETS_S,
            registry=registry,
        )
        for outcome in OUTCOMES:  # every series from the start, at 0, so dashboards show 0 rather than no data
            self.histogram.labels(outcome.value)
        jobs.finished_listeners.append(self._observe)

    def _observe(self, job: Job) -> None:
        if job.state in OUTCOMES and job.finished_ts is not None:
            self.histogram.labels(job.state.value).observe(max(0.0, job.finished_ts - job.created_ts))

    def close(self) -> None:
        if self._observe in self._jobs.finished_listeners:
            self._jobs.finished_listeners.remove(self._observe)
