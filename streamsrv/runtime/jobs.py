"""Clip analysis jobs on the live inference loop, at lower priority than the cameras.

A ``JobManager`` keeps a bounded queue of jobs and runs ``jobs.max_concurrent`` of them at once, one worker thread
each. A job decodes its clip exactly as ``streamsrv analyze`` does (``open_video``: every frame, or frames spaced to
``detect_fps``), feeds the frames through its own tracked background lane of the supervisor (lossless, and live
cameras always go first: see ``Supervisor.open_lane``), and turns the in-order results into analyze's frame, event
and summary records with a fresh ``RuleEngine`` over the job's rules (``build_records``). The records, as JSON
lines, go to a ``ResultStore`` bounded in bytes and by age.

With ``events.redis_url`` set every job is also recorded in Redis (``JobLedger``), so a restarted server resumes the
jobs that were queued or running (from their start; uploaded clips wait in ``jobs.spool_dir``).

Single images (``POST /api/detect``) go through one shared untracked lane, the manager's ``ImageLane``
(``streamsrv.runtime.image_lane``).

Example:
    >>> manager = JobManager(supervisor, cfg); manager.start()  # doctest: +SKIP
    >>> job = manager.submit("clip.mp4", video="clip.mp4")  # doctest: +SKIP
    >>> manager.get(job.id).state, manager.result(job.id)  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import logging
import math
import queue
import shutil
import tempfile
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import redis
from pydantic import BaseModel, Field, ValidationError

from streamsrv.analyze import OpenVideo, build_records, jsonl_line, open_video
from streamsrv.config.models import AppConfig, CameraConfig, redact_url
from streamsrv.config.rules import RulesConfig
from streamsrv.errors import Busy, NotFoundError, StreamsrvError
from streamsrv.rules import RuleEngine
from streamsrv.runtime.image_lane import ImageLane
from streamsrv.runtime.job_store import Job, JobLedger, JobState, ResultStore, StoredJob
from streamsrv.runtime.supervisor import Lane, Supervisor
from streamsrv.types import FrameResult

log = logging.getLogger(__name__)

STREAM_SCHEMES = ("http", "https", "rtsp", "rtsps")
# A job waits this long for inference before failing: the live cameras may keep it busy, but the background lane's
# starvation guard still takes a frame every inference.background_max_wait_s.
_INFERENCE_PATIENCE_S = 300.0
_POLL_S = 0.25
_JANITOR_INTERVAL_S = 5.0
_FIRST_GUESS_JOB_S = 10.0  # for Retry-After before any job has finished
# The shared image lane's slots are this big on each side (tmpfs allocates only what images use); larger images
# are scaled down to fit, which the network, at inference.imgsz, never notices.
# How a job can end: in one of the two finished states, or deleted before it got there.
CANCELLED = "cancelled"
JOB_OUTCOMES = (JobState.DONE.value, JobState.FAILED.value, CANCELLED)


class JobStats(BaseModel):
    """Counts of the job queue and result store since the server started."""

    queued: int
    running: int
    done: int
    failed: int
    rejected: int = Field(description="Submissions refused with 429 because the queue was full.")
    completed: int = Field(description="Jobs finished (done or failed) since the server started.")
    finished: dict[str, int] = Field(
        description="Jobs that ended since the server started, by outcome: done, failed, or cancelled (deleted while "
        "queued or running)."
    )
    frames_analysed: int = Field(
        description="Frames jobs analysed since the server started, those of cancelled and interrupted jobs included."
    )
    evicted: int = Field(description="Finished jobs removed early to keep the store within jobs.result_store_bytes.")
    expired: int = Field(description="Finished jobs removed after jobs.result_ttl_s.")
    result_bytes: int
    result_store_bytes: int


class JobStoreUnavailable(StreamsrvError):
    """Redis, where jobs are kept, cannot be reached."""


class _Stop(Exception):
    """The job was deleted, or the server is stopping."""


@dataclass(eq=False)
class _Run:
    stored: StoredJob
    stop: threading.Event = field(default_factory=threading.Event)
    deleted: bool = False
    lane: Lane | None = None


@dataclass(frozen=True, slots=True)
class _End:
    submitted: int


class JobManager:
    """The job queue, its workers and the result store, and the shared lane for single images; thread-safe."""

    def __init__(self, supervisor: Supervisor, cfg: AppConfig) -> None:
        self.cfg = cfg.jobs
        self._sup = supervisor
        client = _redis(cfg.events.redis_url) if cfg.events.redis_url else None
        self._ledger = JobLedger(client, self.cfg.result_ttl_s) if client is not None else None
        self._store = ResultStore(self.cfg.result_store_bytes, self.cfg.result_ttl_s, client)
        self._own_spool = self.cfg.spool_dir is None
        self.spool_dir = Path(self.cfg.spool_dir or tempfile.gettempdir())  # made our own in start() when unset
        self.images = ImageLane(supervisor, self.cfg.max_detect_inflight)
        self._cond = threading.Condition()
        self._jobs: dict[str, StoredJob] = {}
        self._queue: deque[str] = deque()
        self._running: dict[str, _Run] = {}
        self._stopping = False
        self._janitor_stop = threading.Event()
        self._restored = self._ledger is None
        self._threads: list[threading.Thread] = []
        self._rejected = self._frames_analysed = 0
        self._finished = dict.fromkeys(JOB_OUTCOMES, 0)
        self._mean_job_s = _FIRST_GUESS_JOB_S

    # -- life cycle -----------------------------------------------------------------------------------------------
    def start(self) -> None:
        if self._own_spool:
            self.spool_dir = Path(tempfile.mkdtemp(prefix="streamsrv-jobs-"))
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        if self._ledger is None:
            self._sweep_spool(keep=set())  # nothing can resume what an earlier run left
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
                self._halt(run)
            self._cond.notify_all()
        self.images.close()
        for t in self._threads:
            t.join(timeout=10)
        if self._own_spool:
            shutil.rmtree(self.spool_dir, ignore_errors=True)

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
        clean = suffix.lower() if suffix[1:].isascii() and suffix[1:].isalnum() and len(suffix) <= 9 else ""
        return self.spool_dir / f"upload-{uuid.uuid4().hex}{clean}"

    def check_source(self, url: str) -> str:
        """The URL or server path a job may read; ValueError naming what is wrong otherwise."""
        try:
            CameraConfig(id="job", url=url)  # what a camera's URL may be, a job's may be
        except ValidationError as exc:
            raise ValueError(str(exc.errors()[0]["msg"]).removeprefix("Value error, ")) from None
        scheme = urlsplit(url).scheme.lower() if "://" in url else ""
        if scheme in STREAM_SCHEMES:
            return url
        allowed = self.cfg.allowed_file_dir
        if allowed is None:
            raise ValueError("this server reads no files for jobs (jobs.allowed_file_dir is not set); upload the clip")
        root = Path(allowed).resolve()
        path = (root / url.removeprefix("file://")).resolve()  # an absolute path replaces root
        if not path.is_relative_to(root):
            raise ValueError(f"{url!r} is outside the directory jobs may read (jobs.allowed_file_dir)")
        if not path.is_file():
            raise ValueError(f"{url!r} is not a file in the directory jobs may read")
        return str(path)

    def submit(
        self,
        source: str,
        video: str,
        spooled: bool = False,
        detect_fps: float | None = None,
        rules: RulesConfig | None = None,
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
                self._halt(run)
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
                run = _Run(stored)
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

    def _execute(self, run: _Run) -> None:
        job = run.stored.job
        started = time.monotonic()
        try:
            data = self._analyse(run)
        except _Stop:
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

    def _analyse(self, run: _Run) -> bytes:
        job = run.stored.job
        self._wait_for_model(run)
        video = open_video(run.stored.source, None, job.detect_fps)
        results: queue.Queue[object] = queue.Queue()
        feeder = threading.Thread(target=self._feed, args=(run, video, results), name=f"streamsrv-job-feed-{job.id}")
        try:
            cam = video.camera
            with self._cond:
                if run.stop.is_set():
                    raise _Stop
                run.lane = self._sup.open_lane(results.put, True, video.fps, cam.max_width, cam.max_height)
                cap = math.ceil(self.cfg.max_video_s * video.fps)
                job.total_frames = min(video.total_frames, cap) if video.total_frames else None
            feeder.start()
            engine = RuleEngine(job.id, job.rules, clock="video")
            lines: list[bytes] = []
            size = 0
            for record in build_records(self._results(run, results), engine, job.video):
                line = jsonl_line(record).encode()
                size += len(line)
                if size > self._store.max_bytes:
                    raise ValueError(
                        f"the result grew past jobs.result_store_bytes ({self._store.max_bytes} bytes); "
                        "analyse fewer frames (detect_fps) or a shorter clip"
                    )
                lines.append(line)
            return b"".join(lines)
        finally:
            with self._cond:
                self._halt(run)
            if feeder.is_alive():
                feeder.join(timeout=30)
            video.source.close()

    def _wait_for_model(self, run: _Run) -> None:
        deadline = time.monotonic() + _INFERENCE_PATIENCE_S
        while not self._sup.inference.model_loaded:
            if run.stop.wait(_POLL_S):
                raise _Stop
            if time.monotonic() > deadline:
                raise TimeoutError(f"the model was not loaded within {_INFERENCE_PATIENCE_S:g}s")

    def _feed(self, run: _Run, video: OpenVideo, out: queue.Queue[object]) -> None:
        """Decode and hand frames to the job's lane, which waits for room (lossless); runs on its own thread."""
        submitted = 0
        first_pts: float | None = None
        try:
            for frame in video.source.frames():
                first_pts = frame.video_ts if first_pts is None else first_pts
                if frame.video_ts - first_pts >= self.cfg.max_video_s:
                    run.stored.job.truncated = True
                    break
                lane = run.lane
                if run.stop.is_set() or lane is None:
                    break
                lane.submit(frame.image, frame.video_ts, frame.frame_index, timeout_s=_INFERENCE_PATIENCE_S)
                submitted += 1
        except Exception as exc:  # handed to the consumer, which fails the job with it
            out.put(exc)
        finally:
            out.put(_End(submitted))

    def _results(self, run: _Run, results: queue.Queue[object]) -> Iterator[FrameResult]:
        """The lane's results in order (``build_records`` names them after the job)."""
        job = run.stored.job
        expected: int | None = None
        received = 0
        last = time.monotonic()
        while expected is None or received < expected:
            if run.stop.is_set():
                raise _Stop
            try:
                item = results.get(timeout=_POLL_S)
            except queue.Empty:
                if time.monotonic() - last > _INFERENCE_PATIENCE_S:
                    raise TimeoutError(f"inference returned no frame for {_INFERENCE_PATIENCE_S:g}s") from None
                continue
            last = time.monotonic()
            if isinstance(item, _End):
                expected = item.submitted
                continue
            if isinstance(item, Exception):
                if run.stop.is_set():
                    raise _Stop  # the lane was closed under the feeder
                raise item
            assert isinstance(item, FrameResult)
            if item.frame.seq != received + 1:
                raise ValueError(
                    f"frame results were lost (got #{item.frame.seq} after #{received}); run the job again"
                )
            received += 1
            with self._cond:
                job.frames_done = received
                self._frames_analysed += 1
                if job.total_frames:
                    job.progress = round(min(99.9, 100 * received / job.total_frames), 1)
            yield item

    def _halt(self, run: _Run) -> None:
        """Stop a run's feeding and close its lane; called with the lock held."""
        run.stop.set()
        if run.lane is not None:
            run.lane.close()

    # -- finishing and forgetting ----------------------------------------------------------------------------------
    def _finish(self, run: _Run, data: bytes = b"", error: str | None = None) -> None:
        stored = run.stored
        job = stored.job
        self._drop_spool(stored)
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

    def _stopped(self, run: _Run) -> None:
        stored = run.stored
        if run.deleted:
            return
        # Shutting down: back to the queue, in Redis when there is one, from the first frame again.
        with self._cond:
            job = stored.job
            job.state, job.started_ts, job.frames_done, job.progress = JobState.QUEUED, None, 0, None
        self._persist(stored)
        if self._ledger is None:
            self._drop_spool(stored)

    def _forget(self, stored: StoredJob) -> None:
        self._store.delete(stored.job.id)
        self._drop_spool(stored)
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

    def _drop_spool(self, stored: StoredJob) -> None:
        if stored.spooled:
            Path(stored.source).unlink(missing_ok=True)

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
            raw = self._ledger.load_all()
            found = []
            for data in raw:
                try:
                    found.append(StoredJob.model_validate_json(data))
                except ValidationError as exc:
                    log.warning("ignoring a job in Redis this version cannot read: %s", exc.errors()[0]["msg"])
            found.sort(key=lambda s: s.job.finished_ts or s.job.created_ts)
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
        self._sweep_spool(keep)
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

    def _sweep_spool(self, keep: set[str]) -> None:
        for path in self.spool_dir.glob("upload-*"):
            if path.name not in keep:
                path.unlink(missing_ok=True)


def _redis(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0)
