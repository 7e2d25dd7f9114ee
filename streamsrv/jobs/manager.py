"""``JobManager``: clip analysis jobs in a bounded queue, run a few at once, their results kept for a while.

The manager keeps a bounded queue of jobs (``jobs.max_queued``; a full one answers ``Busy``) and runs
``jobs.max_concurrent`` of them at once, one worker thread each; a worker runs a job with ``JobRun``
(``streamsrv.jobs.run``) and keeps its records, as JSON lines, in a ``ResultStore`` bounded in bytes and by age.
Deleting a job cancels it wherever it is in its life.

With ``events.redis_url`` set every job is also recorded in Redis (``JobLedger``), so a restarted server resumes the
jobs that were queued or running (from their start; uploaded clips wait in ``jobs.spool_dir``).

Single images (``POST /api/detect``) go through one shared untracked lane, the manager's ``ImageLane``
(``streamsrv.jobs.images``).

Example:
    >>> manager = JobManager(server, cfg); manager.start()  # doctest: +SKIP
    >>> job = manager.submit("clip.mp4", video="clip.mp4")  # doctest: +SKIP
    >>> manager.get(job.id).state, manager.result(job.id)  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from pathlib import Path

import redis

from streamsrv.config.models import AppConfig, redact_url
from streamsrv.config.rules import RulesConfig
from streamsrv.errors import Busy, NotFoundError, StreamsrvError
from streamsrv.jobs.images import ImageLane
from streamsrv.jobs.run import JobRun, JobStopped
from streamsrv.jobs.shared import SharedInference
from streamsrv.jobs.sources import Spool, check_source
from streamsrv.jobs.store import (
    CANCELLED,
    JOB_OUTCOMES,
    Job,
    JobLedger,
    JobState,
    JobStats,
    JobStoreUnavailable,
    ResultStore,
    StoredJob,
    redis_client,
)

log = logging.getLogger(__name__)

_JANITOR_INTERVAL_S = 5.0
_FIRST_GUESS_JOB_S = 10.0  # for Retry-After before any job has finished


class JobManager:
    """The job queue, its workers and the result store, and the shared lane for single images; thread-safe."""

    def __init__(self, inference: SharedInference, cfg: AppConfig) -> None:
        self.cfg = cfg.jobs
        self._inference = inference
        client = redis_client(cfg.events.redis_url) if cfg.events.redis_url else None
        self._ledger = JobLedger(client, self.cfg.result_ttl_s) if client is not None else None
        self._store = ResultStore(self.cfg.result_store_bytes, self.cfg.result_ttl_s, client)
        self._spool = Spool(self.cfg.spool_dir)
        self.images = ImageLane(inference, self.cfg.max_detect_inflight)
        self._cond = threading.Condition()
        self._jobs: dict[str, StoredJob] = {}
        self._queue: deque[str] = deque()
        self._running: dict[str, JobRun] = {}
        self._stopping = False
        self._janitor_stop = threading.Event()
        self._restored = self._ledger is None
        self._threads: list[threading.Thread] = []
        self._rejected = self._frames_analysed = 0
        self._finished = dict.fromkeys(JOB_OUTCOMES, 0)
        self._mean_job_s = _FIRST_GUESS_JOB_S
        self.finished_listeners: list[Callable[[Job], None]] = []  # called with each job that ends done or failed

    # -- life cycle -----------------------------------------------------------------------------------------------
    def start(self) -> None:
        self._spool.open()
        if self._ledger is None:
            self._spool.sweep(keep=set())  # nothing can resume what an earlier run left
        else:
            self._try_restore()
        for i in range(self.cfg.max_concurrent):
            self._spawn(self._work, f"streamsrv-job-{i}")
        self._spawn(self._janitor, "streamsrv-jobs-janitor")

    def stop(self) -> None:
        """Stop the workers; running jobs go back to the queue in Redis (when kept there) to resume later."""
        with self._cond:
            self._stopping = True
            self._janitor_stop.set()
            for run in self._running.values():
                run.halt()
            self._cond.notify_all()
        self.images.close()
        for t in self._threads:
            t.join(timeout=10)
        self._spool.close()

    # -- the API's calls ------------------------------------------------------------------------------------------
    def check_room(self) -> None:
        """Raise Busy if a job submitted now would be refused."""
        with self._cond:
            if len(self._queue) >= self.cfg.max_queued:
                self._rejected += 1
                retry_s = min(600, max(1, math.ceil(self._mean_job_s / self.cfg.max_concurrent)))
                raise Busy(
                    f"the job queue is full ({self.cfg.max_queued} jobs wait, jobs.max_queued); retry later", retry_s
                )

    def new_spool_file(self, suffix: str) -> Path:
        """A fresh path in the spool directory for an uploaded clip (the caller writes it)."""
        return self._spool.new_file(suffix)

    def check_source(self, url: str) -> str:
        """The URL or server path a job may read; ValueError naming what is wrong otherwise."""
        return check_source(url, self.cfg.allowed_file_dir, self.cfg.allow_link_local_urls)

    def submit(
        self,
        source: str,
        video: str,
        spooled: bool = False,
        detect_fps: float | None = None,
        rules: RulesConfig | None = None,
        motion_gating: bool = True,
    ) -> Job:
        """Queue a job reading ``source`` (a checked URL or path, or a spooled upload the job then owns).

        Raises Busy when the queue is full, JobStoreUnavailable when Redis cannot record it.
        """
        job = Job(
            id=uuid.uuid4().hex,
            state=JobState.QUEUED,
            video=redact_url(video),
            detect_fps=detect_fps,
            rules=rules or RulesConfig(),
            motion_gating=motion_gating,
            created_ts=time.time(),
        )
        stored = StoredJob(job=job, source=source, spooled=spooled)
        with self._cond:
            self.check_room()
            try:
                self._persist(stored, raise_errors=True)
            except redis.RedisError as exc:
                raise JobStoreUnavailable(f"the job store (Redis) cannot be reached: {exc}") from None
            self._jobs[job.id] = stored
            self._queue.append(job.id)
            self._cond.notify()
        log.info("job %s queued: %s", job.id, job.video)
        return job.model_copy(deep=True)

    def get(self, job_id: str) -> Job:
        with self._cond:
            stored = self._jobs.get(job_id)
            if stored is None:
                raise NotFoundError(f"job {job_id!r} not found (finished jobs are kept for jobs.result_ttl_s)")
            return stored.job.model_copy(deep=True)

    def jobs(self) -> list[Job]:
        with self._cond:
            return [s.job.model_copy(deep=True) for s in self._jobs.values()]

    def result(self, job_id: str) -> bytes | None:
        """A done job's records as JSON lines (``streamsrv analyze`` output); None while it is not done.

        Raises NotFoundError for unknown jobs, JobStoreUnavailable when Redis cannot be read.
        """
        if self.get(job_id).state != JobState.DONE:
            return None
        try:
            data = self._store.get(job_id)
        except redis.RedisError as exc:
            raise JobStoreUnavailable(f"the job store (Redis) cannot be reached: {exc}") from None
        if data is None:
            raise NotFoundError(f"job {job_id!r}: its result is gone (expired or evicted)")
        return data

    def delete(self, job_id: str) -> None:
        """Cancel a queued or running job, or remove a finished one with its result."""
        with self._cond:
            stored = self._jobs.pop(job_id, None)
            if stored is None:
                raise NotFoundError(f"job {job_id!r} not found")
            with contextlib.suppress(ValueError):
                self._queue.remove(job_id)
            if stored.job.state in (JobState.QUEUED, JobState.RUNNING):
                self._finished[CANCELLED] += 1
            run = self._running.get(job_id)
            if run is not None:
                run.deleted = True
                run.halt()
        if run is None:  # a running job cleans up after itself
            self._forget(stored)
        log.info("job %s deleted (%s)", job_id, stored.job.state)

    def stats(self) -> JobStats:
        store = self._store.stats()
        with self._cond:
            states = [s.job.state for s in self._jobs.values()]
            return JobStats(
                queued=states.count(JobState.QUEUED),
                running=states.count(JobState.RUNNING),
                done=states.count(JobState.DONE),
                failed=states.count(JobState.FAILED),
                rejected=self._rejected,
                completed=self._finished[JobState.DONE] + self._finished[JobState.FAILED],
                finished=dict(self._finished),
                frames_analysed=self._frames_analysed,
                evicted=store.evicted,
                expired=store.expired,
                result_bytes=store.bytes,
                result_store_bytes=store.max_bytes,
            )

    # -- workers --------------------------------------------------------------------------------------------------
    def _spawn(self, target: object, name: str) -> None:
        t = threading.Thread(target=target, name=name, daemon=True)  # type: ignore[arg-type]
        t.start()
        self._threads.append(t)

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    return
                stored = self._jobs[self._queue.popleft()]
                run = JobRun(stored, self._inference, self.cfg, self._store.max_bytes, self._cond, self._count_frame)
                self._running[stored.job.id] = run
                stored.job.state, stored.job.started_ts = JobState.RUNNING, time.time()
            self._persist(stored)
            try:
                self._execute(run)
            except Exception:  # a bug must not take the worker down with it
                log.exception("job %s: worker error", stored.job.id)
            finally:
                # Only here, once the worker has written all it will about the job, and in one step with leaving
                # _running: a DELETE either sees the run (and the worker forgets the job) or does it itself.
                with self._cond:
                    self._running.pop(stored.job.id, None)
                    deleted = run.deleted
                if deleted:
                    self._forget(stored)

    def _execute(self, run: JobRun) -> None:
        job = run.stored.job
        started = time.monotonic()
        try:
            data = run.analyse()
        except JobStopped:
            self._stopped(run)
            return
        except (StreamsrvError, TimeoutError, ValueError) as exc:
            self._finish(run, error=str(exc))
        except Exception as exc:
            log.exception("job %s failed", job.id)
            self._finish(run, error=f"internal error: {type(exc).__name__}: {exc}")
        else:
            self._finish(run, data=data)
        with self._cond:
            self._mean_job_s = 0.8 * self._mean_job_s + 0.2 * (time.monotonic() - started)

    def _count_frame(self) -> None:
        self._frames_analysed += 1

    # -- finishing and forgetting ----------------------------------------------------------------------------------
    def _finish(self, run: JobRun, data: bytes = b"", error: str | None = None) -> None:
        stored = run.stored
        job = stored.job
        self._spool.drop(stored)
        if run.deleted:  # the worker forgets it
            return
        finished_ts = time.time()
        record_bytes = len(stored.model_dump_json())
        evicted: list[str] = []
        if error is None:
            try:
                evicted = self._store.put(job.id, data, finished_ts, record_bytes)
            except (ValueError, redis.RedisError) as exc:
                error = f"could not keep the result: {exc}"
        if error is not None:
            data = b""
            evicted = self._store.put(job.id, data, finished_ts, record_bytes)  # only counts it: never fails
        # The state changes only once the result is in the store, so "done" always has a result to show.
        with self._cond:
            job.finished_ts = finished_ts
            job.state = JobState.FAILED if error else JobState.DONE
            job.error = redact_url(error) if error else None
            job.result_bytes = len(data)
            if error is None:
                job.progress, job.total_frames = 100.0, job.frames_done
            deleted = run.deleted
            if not deleted:  # deleted since the check above: delete() counted it as cancelled
                self._finished[job.state] += 1
        self._drop_jobs(evicted)  # their results made room for this one, deleted since or not
        if deleted:
            return
        self._persist(stored)
        log.info("job %s %s%s", job.id, job.state, f": {job.error}" if job.error else "")
        for listener in list(self.finished_listeners):
            listener(job)

    def _stopped(self, run: JobRun) -> None:
        stored = run.stored
        if run.deleted:
            return
        # Shutting down: back to the queue, in Redis when there is one, from the first frame again.
        with self._cond:
            job = stored.job
            job.state, job.started_ts, job.frames_done, job.progress = JobState.QUEUED, None, 0, None
        self._persist(stored)
        if self._ledger is None:
            self._spool.drop(stored)

    def _forget(self, stored: StoredJob) -> None:
        self._store.delete(stored.job.id)
        self._spool.drop(stored)
        if self._ledger is not None:
            try:
                self._ledger.delete(stored.job.id)
            except redis.RedisError as exc:
                log.warning("job %s: could not delete it from Redis: %s", stored.job.id, exc)

    def _drop_jobs(self, job_ids: list[str]) -> None:
        with self._cond:
            gone = [s for s in (self._jobs.pop(i, None) for i in job_ids) if s is not None]
        for stored in gone:
            self._forget(stored)

    def _persist(self, stored: StoredJob, raise_errors: bool = False) -> None:
        if self._ledger is None:
            return
        finished = stored.job.state in (JobState.DONE, JobState.FAILED)
        try:
            self._ledger.save(stored.job.id, stored.model_dump_json(), finished)
        except redis.RedisError as exc:
            if raise_errors:
                raise
            log.warning("job %s: could not record it in Redis: %s", stored.job.id, exc)

    # -- housekeeping ---------------------------------------------------------------------------------------------
    def _janitor(self) -> None:
        # Not on self._cond: a notify() meant for a worker could wake the janitor instead, and the job would wait.
        while not self._janitor_stop.wait(_JANITOR_INTERVAL_S):
            if not self._restored:
                self._try_restore()
            self._drop_jobs(self._store.expire(time.time()))

    def _try_restore(self) -> None:
        """Take back the jobs Redis holds: finished ones with their results, unfinished ones into the queue."""
        assert self._ledger is not None
        try:
            found = self._ledger.load_all()
            for stored in found:
                self._restore(stored)
        except redis.RedisError as exc:
            log.error("could not load jobs from Redis (retrying every %gs): %s", _JANITOR_INTERVAL_S, exc)
            return
        with self._cond:
            self._restored = True
            keep = {Path(s.source).name for s in self._jobs.values() if s.spooled}
            queued = len(self._queue)
            self._cond.notify_all()
        self._spool.sweep(keep)
        log.info("restored %d job(s) from Redis, %d of them queued", len(found), queued)

    def _restore(self, stored: StoredJob) -> None:
        job = stored.job
        if job.state in (JobState.DONE, JobState.FAILED):
            assert job.finished_ts is not None
            if self._store.restore(job.id, job.result_bytes, job.finished_ts, len(stored.model_dump_json())):
                with self._cond:
                    self._jobs[job.id] = stored
            return
        job.state, job.started_ts, job.frames_done, job.progress = JobState.QUEUED, None, 0, None
        if stored.spooled and not Path(stored.source).is_file():
            job.state, job.finished_ts = JobState.FAILED, time.time()
            job.error = "the uploaded clip was lost in a restart (set jobs.spool_dir to keep uploads)"
            self._store.put(job.id, b"", job.finished_ts, extra_bytes=len(stored.model_dump_json()))
            self._persist(stored)
            with self._cond:
                self._jobs[job.id] = stored
                self._finished[JobState.FAILED] += 1
            return
        with self._cond:
            self._jobs[job.id] = stored
            self._queue.append(job.id)
