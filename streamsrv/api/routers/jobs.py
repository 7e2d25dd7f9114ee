"""Clip analysis jobs: submit a clip (upload or URL) with optional rules, follow its progress, fetch the result.

A job's result is exactly what ``streamsrv analyze`` writes for the same clip: frame records (tracks), event
records and a summary (counts), as JSON lines at ``/api/jobs/{id}/result`` and as a list in ``GET /api/jobs/{id}``.
Jobs share the live cameras' inference loop at lower priority, a few at a time (``jobs.max_concurrent``); the queue
is bounded (``jobs.max_queued``) and a full one answers 429 with ``Retry-After``. Uploads are streamed to the spool
directory, never held whole in memory, and checked to be readable video before they are queued.
"""

from __future__ import annotations

from pathlib import Path as FilePath
from typing import Annotated, Any, BinaryIO

import yaml
from fastapi import APIRouter, Depends, File, Form, HTTPException, Path, Query, Request, Response, UploadFile, status
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field, ValidationError

from streamsrv.api.deps import Authenticated
from streamsrv.api.schemas import Message, request_error
from streamsrv.config.models import CameraConfig, JobsConfig
from streamsrv.config.rules import RulesConfig
from streamsrv.decode.source import VideoSource
from streamsrv.errors import Busy, NotFoundError, SourceError
from streamsrv.jobs.manager import JobManager
from streamsrv.jobs.store import Job, JobStats, JobStoreUnavailable

router = APIRouter(prefix="/api/jobs", tags=["jobs"], dependencies=[Authenticated])

JOB_ID_PATTERN = r"^[0-9a-f]{32}$"
_CLIP_TYPES = ("video/", "application/octet-stream", "application/mp4", "application/x-matroska")
_COPY_CHUNK = 1 << 20
_MAX_NAME_CHARS = 255  # of an upload's file name, as the job shows it
# The multipart envelope around an image (boundaries, part headers) on top of the image itself.
_MULTIPART_SLACK_BYTES = 64 * 1024


def upload_limits(cfg: JobsConfig) -> dict[str, tuple[int, str]]:
    """Request body limits of the upload endpoints, for ``BodySizeLimit``: larger than other requests'."""
    return {
        "/api/jobs": (cfg.max_upload_bytes, "jobs.max_upload_bytes"),
        "/api/detect": (cfg.max_image_bytes + _MULTIPART_SLACK_BYTES, "jobs.max_image_bytes"),
    }


def get_jobs(request: Request) -> JobManager:
    jobs: JobManager = request.app.state.jobs
    return jobs


JobsDep = Annotated[JobManager, Depends(get_jobs)]
JobId = Annotated[str, Path(pattern=JOB_ID_PATTERN, description="The id POST /api/jobs returned.")]


class JobList(BaseModel):
    jobs: list[Job] = Field(description="Queued, running and kept finished jobs, oldest first.")
    stats: JobStats


class JobWithResult(BaseModel):
    job: Job
    records: list[dict[str, Any]] | None = Field(
        description="When done: the records of `streamsrv analyze` for the clip, in its order (frame records with "
        "tracks, event records, and the summary with counts last); null before, or with records=false."
    )


class NDJSONResponse(Response):
    media_type = "application/x-ndjson"


def busy(exc: Busy) -> HTTPException:
    return HTTPException(status.HTTP_429_TOO_MANY_REQUESTS, str(exc), headers={"Retry-After": str(exc.retry_after_s)})


def _unavailable(exc: JobStoreUnavailable) -> HTTPException:
    return HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc), headers={"Retry-After": "5"})


def _parse_rules(text: str | None) -> RulesConfig | None:
    if text is None or not text.strip():
        return None
    try:
        data = yaml.safe_load(text)  # JSON is YAML too
    except yaml.YAMLError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"rules: not JSON or YAML: {exc}") from None
    try:
        return RulesConfig.model_validate(data)
    except ValidationError as err:
        raise request_error(err, "body", "rules") from None


def _spool(src: BinaryIO, dest: FilePath, limit: int) -> int:
    size = 0
    with dest.open("wb") as out:
        while chunk := src.read(_COPY_CHUNK):
            size += len(chunk)
            if size > limit:
                raise HTTPException(
                    status.HTTP_413_CONTENT_TOO_LARGE, f"the clip is larger than {limit} bytes (jobs.max_upload_bytes)"
                )
            out.write(chunk)
    return size


def _check_video(path: FilePath, name: str) -> None:
    source = VideoSource(CameraConfig(id="upload", url=str(path)), realtime=False, skip=False)
    try:
        source.open()
    except SourceError as exc:
        reason = str(exc).replace(str(path), name)  # never show the spool path
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, f"the upload is not a readable video: {reason}"
        ) from None
    finally:
        source.close()


async def _spool_upload(jobs: JobManager, file: UploadFile) -> FilePath:
    name = file.filename or "upload"
    declared = (file.content_type or "application/octet-stream").lower()
    if not declared.startswith(_CLIP_TYPES):
        raise HTTPException(
            status.HTTP_415_UNSUPPORTED_MEDIA_TYPE, f"{name}: {declared} is not video; upload a video clip"
        )
    path = jobs.new_spool_file(FilePath(name).suffix)
    try:
        size = await run_in_threadpool(_spool, file.file, path, jobs.cfg.max_upload_bytes)
        if size == 0:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"{name}: the file is empty")
        await run_in_threadpool(_check_video, path, name)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    summary="Queue a clip for analysis (upload it, or give a URL the server can read)",
    responses={
        413: {"model": Message, "description": "The upload is larger than jobs.max_upload_bytes."},
        415: {"model": Message, "description": "The upload is not video (by its content type)."},
        422: {"description": "No or both of file and url, a URL the server may not read, bad rules, not video."},
        429: {"model": Message, "description": "The queue is full; retry after the Retry-After seconds."},
        503: {"model": Message, "description": "The job store (Redis) cannot be reached."},
    },
)
async def create_job(
    jobs: JobsDep,
    response: Response,
    file: Annotated[UploadFile | None, File(description="The clip (any container and codec FFmpeg reads).")] = None,
    url: Annotated[
        str | None,
        Form(
            min_length=1,
            max_length=2048,
            description="Instead of file: an http(s):// or rtsp(s):// URL, or a file:// URL or path inside "
            "jobs.allowed_file_dir. A stream is read for jobs.max_video_s at most.",
        ),
    ] = None,
    rules: Annotated[
        str | None,
        Form(description="Zones and tripwires (a camera's rules: {zones: [...], lines: [...]}) as JSON or YAML."),
    ] = None,
    detect_fps: Annotated[
        float | None, Form(gt=0, le=120, description="Analyse frames spaced to this rate; every frame when unset.")
    ] = None,
    motion_gating: Annotated[
        bool, Form(description="Skip frames without motion, as a live camera would; false analyses every frame.")
    ] = True,
) -> Job:
    if (file is None) == (url is None):
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "give either a file upload or a url, not both")
    parsed_rules = _parse_rules(rules)
    try:
        jobs.check_room()
    except Busy as exc:
        raise busy(exc) from None
    if file is not None:
        path = await _spool_upload(jobs, file)
        source, video, spooled = str(path), (file.filename or "upload")[:_MAX_NAME_CHARS], True
    else:
        assert url is not None
        try:
            source, video, spooled = jobs.check_source(url), url, False
        except ValueError as exc:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"url: {exc}") from None
    try:
        job = jobs.submit(source, video, spooled, detect_fps, parsed_rules, motion_gating)
    except (Busy, JobStoreUnavailable) as exc:
        if spooled:
            FilePath(source).unlink(missing_ok=True)
        raise busy(exc) if isinstance(exc, Busy) else _unavailable(exc) from None
    response.headers["Location"] = f"/api/jobs/{job.id}"
    return job


@router.get("", summary="All jobs kept (queued, running, finished) and queue statistics")
def list_jobs(jobs: JobsDep) -> JobList:
    return JobList(jobs=sorted(jobs.jobs(), key=lambda j: j.created_ts), stats=jobs.stats())


@router.get(
    "/{job_id}",
    summary="A job's state and progress, and when done its result (the records of streamsrv analyze)",
    response_model=JobWithResult,
    responses={404: {"model": Message}, 503: {"model": Message}},
)
def get_job(
    job_id: JobId,
    jobs: JobsDep,
    records: Annotated[bool, Query(description="Include the result's records when done.")] = True,
) -> Response:
    try:
        job = jobs.get(job_id)
        data = jobs.result(job_id) if records else None
    except NotFoundError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
    except JobStoreUnavailable as exc:
        raise _unavailable(exc) from None
    # The stored JSON lines become the list as they are: a result can be large, and parsing it only to
    # serialise it again would cost time and memory for nothing.
    listed = b"[" + data.rstrip(b"\n").replace(b"\n", b",") + b"]" if data is not None else b"null"
    body = b'{"job":' + job.model_dump_json().encode() + b',"records":' + listed + b"}"
    return Response(body, media_type="application/json")


@router.get(
    "/{job_id}/result",
    summary="A done job's result as JSON lines, byte for byte the format of streamsrv analyze",
    response_class=NDJSONResponse,
    responses={
        200: {"content": {"application/x-ndjson": {}}, "description": "One JSON record per line."},
        404: {"model": Message},
        409: {"model": Message, "description": "The job is not done (queued, running or failed)."},
        503: {"model": Message},
    },
)
def get_result(job_id: JobId, jobs: JobsDep) -> Response:
    try:
        data = jobs.result(job_id)
        state = jobs.get(job_id).state
    except NotFoundError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
    except JobStoreUnavailable as exc:
        raise _unavailable(exc) from None
    if data is None:
        raise HTTPException(status.HTTP_409_CONFLICT, f"job {job_id} is {state}, not done")
    return NDJSONResponse(data)


@router.delete(
    "/{job_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Cancel a queued or running job, or remove a finished one and its result",
    responses={404: {"model": Message}},
)
def delete_job(job_id: JobId, jobs: JobsDep) -> None:
    try:
        jobs.delete(job_id)
    except NotFoundError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
