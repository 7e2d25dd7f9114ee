"""Probe a source before registering it: what it is (codec, size, frame rate), or why it cannot be opened.

The source is opened by the decoders' own ``VideoSource`` (same options, same error classification) on a
small thread pool. FFmpeg's timeouts bound the open; the request itself gives up a second later in any case,
so a source that hangs in a way FFmpeg does not notice still gets an answer in bounded time.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import av.error
from fastapi import APIRouter, Request
from pydantic import ValidationError

from streamsrv.api.deps import Authenticated
from streamsrv.api.schemas import ProbeFailure, ProbeRequest, ProbeResult, request_error
from streamsrv.config.file_access import check_file_access
from streamsrv.config.models import AppConfig, CameraConfig, redact_url
from streamsrv.decode.source import VideoSource
from streamsrv.errors import SourceError, SourceTimeout, SourceUnavailable
from streamsrv.runtime.registry import absolute_url, field_error

log = logging.getLogger(__name__)
router = APIRouter(tags=["probe"], dependencies=[Authenticated])

# A few at a time: each holds a connection, and a burst of probes must not starve the server of threads.
_PROBES = ThreadPoolExecutor(max_workers=4, thread_name_prefix="streamsrv-probe")
_GRACE_S = 1.0


def failure_reason(exc: SourceError) -> ProbeFailure:
    """A stable code for why a source failed, from the error VideoSource raised and what FFmpeg raised under it."""
    cause = exc.__cause__
    if isinstance(exc, SourceTimeout):
        return "timeout"
    if isinstance(cause, av.error.HTTPUnauthorizedError | av.error.HTTPForbiddenError):
        return "unauthorized"
    if isinstance(cause, av.error.HTTPNotFoundError | av.error.FileNotFoundError | FileNotFoundError):
        return "not_found"
    if isinstance(cause, av.error.InvalidDataError) or (isinstance(exc, SourceUnavailable) and cause is None):
        return "not_video"  # unreadable data, or a container without a video stream
    if isinstance(cause, av.error.ConnectionRefusedError | ConnectionRefusedError):
        return "refused"
    return "error"


def _open(cam: CameraConfig, started: float) -> ProbeResult:
    src = VideoSource(cam, realtime=False, skip=False)
    try:
        src.open()
    except SourceError as exc:
        elapsed_s = time.monotonic() - started
        reason, error = failure_reason(exc), redact_url(str(exc))
        # FFmpeg reports an RTSP server that accepts the connection but never replies as invalid data, once
        # the timeout has passed; bad data itself shows up long before that.
        if reason == "not_video" and elapsed_s >= cam.read_timeout_s:
            reason, error = "timeout", f"{redact_url(cam.url)}: no answer within {cam.read_timeout_s:g}s"
        return ProbeResult(
            ok=False, url=redact_url(cam.url), reason=reason, error=error, elapsed_ms=round(elapsed_s * 1e3, 1)
        )
    finally:
        src.close()
    return ProbeResult(
        ok=True,
        url=redact_url(cam.url),
        codec=src.codec,
        width=src.width,
        height=src.height,
        fps=round(src.fps, 3),
        elapsed_ms=round((time.monotonic() - started) * 1e3, 1),
    )


@router.post("/api/probe", summary="Open a source briefly and report its codec, resolution and frame rate")
async def probe(body: ProbeRequest, request: Request) -> ProbeResult:
    cfg: AppConfig = request.app.state.config
    try:
        cam = CameraConfig(
            id="probe",
            url=body.url,
            rtsp_transport=body.rtsp_transport,
            open_timeout_s=body.timeout_s,
            read_timeout_s=body.timeout_s,
        )
        base_dir = cfg.base_dir or Path.cwd()
        cam = cam.model_copy(update={"url": absolute_url(cam.url, base_dir)})  # opened where it was checked
        check_file_access(cam.url, cfg.server.allowed_file_dirs, base_dir)  # what a camera may read, a probe may
    except ValidationError as err:
        raise request_error(err, "body") from None
    except ValueError as exc:
        raise request_error(field_error("url", str(exc), redact_url(cam.url)), "body") from None
    started = time.monotonic()
    job = asyncio.get_running_loop().run_in_executor(_PROBES, _open, cam, started)
    try:
        result = await asyncio.wait_for(job, body.timeout_s + _GRACE_S)
    except TimeoutError:
        result = ProbeResult(
            ok=False,
            url=redact_url(cam.url),
            reason="timeout",
            error=f"{redact_url(cam.url)}: no answer within {body.timeout_s:g}s",
            elapsed_ms=round((time.monotonic() - started) * 1e3, 1),
        )
    log.info("probe %s: %s", result.url, "ok" if result.ok else result.reason)
    return result
