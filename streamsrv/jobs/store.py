"""Where jobs and their results are kept: the job model, results bounded in bytes and by age, jobs in Redis.

``ResultStore`` holds finished jobs' results (the JSON lines of ``streamsrv analyze``) in memory, or in Redis when
given a client; either way it keeps every result's size here, so the byte bound and the age bound are enforced in
one place: a new result evicts the oldest finished ones until everything fits, and ``expire`` removes those older
than the TTL. Redis keys also carry the TTL, so results of a server that stays down expire by themselves.

``JobStats`` counts the queue and the store for the API and metrics.

``JobLedger`` is the Redis record of every job (its spec and state), from which a restarted server resumes queued
work. Keys (prefix ``streamsrv:jobs:``): ``job:{id}`` (the job's JSON) and ``result:{id}`` (its JSON lines).

Example:
    >>> store = ResultStore(max_bytes=10, ttl_s=60)
    >>> store.put("a", b"123456", finished_ts=1.0), store.put("b", b"123456", finished_ts=2.0)
    ([], ['a'])
    >>> store.get("a"), store.get("b")
    (None, b'123456')
"""

from __future__ import annotations

import contextlib
import enum
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass

import redis
from pydantic import BaseModel, Field, ValidationError

from streamsrv.config.rules import RulesConfig
from streamsrv.errors import StreamsrvError

log = logging.getLogger(__name__)
KEY_PREFIX = "streamsrv:jobs:"
# How a job can end: in one of the two finished states, or deleted before it got there.
CANCELLED = "cancelled"


class JobState(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


class Job(BaseModel):
    """A clip analysis job as the API shows it and Redis keeps it."""

    id: str
    state: JobState
    video: str = Field(description="The uploaded file's name, or the URL (any password redacted).")
    detect_fps: float | None = Field(description="Frames per second analysed; every frame when null.")
    motion_gating: bool = Field(
        True, description="Skip frames without motion as a live camera would (the default camera's motion settings)."
    )
    rules: RulesConfig = Field(description="Zones and tripwires applied to the clip.")
    created_ts: float = Field(description="When the job was submitted (Unix epoch seconds).")
    started_ts: float | None = None
    finished_ts: float | None = None
    frames_done: int = 0
    total_frames: int | None = Field(None, description="Frames to analyse, when the container declares its length.")
    progress: float | None = Field(None, description="Percent of the frames done; null while the length is unknown.")
    error: str | None = Field(None, description="Why the job failed.")
    truncated: bool = Field(False, description="The video ran longer than jobs.max_video_s; the rest was not read.")
    result_bytes: int = Field(0, description="Size of the result (JSON lines).")


class StoredJob(BaseModel):
    """A job with what only the server needs: where to read it (a spooled upload, or the URL with credentials)."""

    job: Job
    source: str
    spooled: bool


JOB_OUTCOMES = (JobState.DONE.value, JobState.FAILED.value, CANCELLED)


class JobStoreUnavailable(StreamsrvError):
    """Redis, where jobs are kept, cannot be reached."""


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


@dataclass(frozen=True, slots=True)
class ResultStoreStats:
    results: int
    bytes: int
    max_bytes: int
    evicted: int  # removed early to make room for newer results
    expired: int  # removed because they outlived the TTL


class ResultStore:
    """Finished jobs' results, at most ``max_bytes`` together and none older than ``ttl_s``; thread-safe.

    Redis errors (``redis.RedisError``) propagate from ``put`` and ``get``: the caller decides what they mean.
    """

    def __init__(
        self, max_bytes: int, ttl_s: float, client: redis.Redis | None = None, prefix: str = KEY_PREFIX
    ) -> None:
        self.max_bytes = max_bytes
        self.ttl_s = ttl_s
        self._redis = client
        self._prefix = prefix
        self._lock = threading.Lock()
        self._sizes: OrderedDict[str, tuple[int, float]] = OrderedDict()  # id -> (bytes, finished_ts), oldest first
        self._data: dict[str, bytes] = {}  # without Redis
        self._bytes = 0
        self._evicted = 0
        self._expired = 0

    def _key(self, job_id: str) -> str:
        return f"{self._prefix}result:{job_id}"

    def put(self, job_id: str, data: bytes, finished_ts: float, extra_bytes: int = 0) -> list[str]:
        """Keep ``data``, counted as ``len(data) + extra_bytes`` (what else the job holds, e.g. its own record);
        returns the ids of older results evicted to make room. ValueError if it alone is too big."""
        size = len(data) + extra_bytes
        if size > self.max_bytes:
            raise ValueError(f"the result is {size} bytes, more than jobs.result_store_bytes ({self.max_bytes})")
        with self._lock:
            evicted = []
            while self._bytes + size > self.max_bytes and self._sizes:
                oldest = next(iter(self._sizes))
                self._drop(oldest)
                evicted.append(oldest)
                self._evicted += 1
            if self._redis is None:
                self._data[job_id] = data
            elif data:  # a failed job has only its record to count
                self._redis.set(self._key(job_id), data, ex=max(1, int(self.ttl_s)))
            self._sizes[job_id] = (size, finished_ts)
            self._bytes += size
            return evicted

    def restore(self, job_id: str, data_bytes: int, finished_ts: float, extra_bytes: int = 0) -> bool:
        """Take back a result Redis still holds after a restart (call in order of ``finished_ts``); False if it
        is gone."""
        if self._redis is None or (data_bytes and not self._redis.exists(self._key(job_id))):
            return False
        with self._lock:
            self._sizes[job_id] = (data_bytes + extra_bytes, finished_ts)
            self._bytes += data_bytes + extra_bytes
        return True

    def get(self, job_id: str) -> bytes | None:
        with self._lock:
            if job_id not in self._sizes:
                return None
            if self._redis is None:
                return self._data.get(job_id)
        data = self._redis.get(self._key(job_id))
        return data if isinstance(data, bytes) else None

    def delete(self, job_id: str) -> None:
        with self._lock:
            if job_id in self._sizes:
                self._drop(job_id)

    def expire(self, now: float) -> list[str]:
        """Remove results that finished more than ``ttl_s`` before ``now``; returns their ids."""
        with self._lock:
            old = [job_id for job_id, (_, ts) in self._sizes.items() if now - ts > self.ttl_s]
            for job_id in old:
                self._drop(job_id)
            self._expired += len(old)
            return old

    def stats(self) -> ResultStoreStats:
        with self._lock:
            return ResultStoreStats(len(self._sizes), self._bytes, self.max_bytes, self._evicted, self._expired)

    def _drop(self, job_id: str) -> None:
        size, _ = self._sizes.pop(job_id)
        self._bytes -= size
        self._data.pop(job_id, None)
        if self._redis is not None:
            with contextlib.suppress(redis.RedisError):  # the key carries the TTL: Redis removes it by itself
                self._redis.delete(self._key(job_id))


class JobLedger:
    """Every job's JSON in Redis, so a restarted server knows its queue; thread-safe (redis-py pools connections)."""

    def __init__(self, client: redis.Redis, ttl_s: float, prefix: str = KEY_PREFIX) -> None:
        self._redis = client
        self._ttl_s = ttl_s
        self._prefix = prefix

    def save(self, job_id: str, job_json: str, finished: bool) -> None:
        """Record a job; a finished one expires with its result, an unfinished one stays until it finishes."""
        key = f"{self._prefix}job:{job_id}"
        if finished:
            self._redis.set(key, job_json, ex=max(1, int(self._ttl_s)))
        else:
            self._redis.set(key, job_json)

    def delete(self, job_id: str) -> None:
        self._redis.delete(f"{self._prefix}job:{job_id}")

    def load_all(self) -> list[StoredJob]:
        """Every job recorded, in the order they finished or else were created; those this version cannot read
        are skipped with a warning."""
        keys = list(self._redis.scan_iter(match=f"{self._prefix}job:*", count=500))
        found = []
        for data in self._redis.mget(keys) if keys else []:
            if not isinstance(data, bytes):
                continue
            try:
                found.append(StoredJob.model_validate_json(data))
            except ValidationError as exc:
                log.warning("ignoring a job in Redis this version cannot read: %s", exc.errors()[0]["msg"])
        found.sort(key=lambda s: s.job.finished_ts or s.job.created_ts)
        return found


def redis_client(url: str) -> redis.Redis:
    """A client for the job store, quick to give up: Redis errors fail one request or get retried later."""
    return redis.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0)
