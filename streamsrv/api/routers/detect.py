"""Detect objects in one uploaded image with the server's model: boxes as JSON, or an annotated JPEG.

The upload is checked before any model work: its declared content type and its first bytes must both say JPEG, PNG
or WebP; its size must be within ``jobs.max_image_bytes``; its pixel count, read from the header before decoding
(a small file can decode to a huge image), within ``jobs.max_image_pixels``; and it must decode completely (a
truncated file is refused). It then goes through the live cameras' inference loop as a background frame (cameras
go first), at most ``jobs.max_detect_inflight`` images at once; more concurrent requests get 429.

The server runs one model at its configured confidence: ``confidence`` and ``classes`` filter what it found, so a
confidence below ``model.confidence`` cannot be honoured and is refused, as is any ``model`` but the loaded one.
"""

from __future__ import annotations

import asyncio
import io
from pathlib import Path
from typing import Annotated

import numpy as np
from fastapi import APIRouter, File, HTTPException, Query, Request, Response, UploadFile, status
from fastapi.concurrency import run_in_threadpool
from PIL import Image, ImageOps, UnidentifiedImageError
from pydantic import BaseModel, Field

from streamsrv.api.deps import Authenticated, ServerDep
from streamsrv.api.routers.jobs import JobsDep, busy
from streamsrv.api.schemas import Message
from streamsrv.config.models import AppConfig, JobsConfig
from streamsrv.errors import Busy, LaneClosed
from streamsrv.jobs.images import Image as BGRImage
from streamsrv.preview.annotate import detections_jpeg
from streamsrv.types import FrameResult

router = APIRouter(tags=["detect"], dependencies=[Authenticated])

# Generous: the image waits behind live camera frames, and a busy CPU may take seconds per batch.
DETECT_TIMEOUT_S = 60.0
# Magic bytes of what we accept -> (PIL format, content type).
_FORMATS = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}
_GENERIC_TYPES = ("application/octet-stream", "")


class Detection(BaseModel):
    label: str
    confidence: float
    bbox: list[float] = Field(
        description="[x1, y1, x2, y2] in the image's pixels (after its EXIF orientation); named as in events and "
        "`streamsrv analyze` records."
    )


class DetectResult(BaseModel):
    model: str = Field(description="The model that ran (the server's only one).")
    width: int
    height: int
    detections: list[Detection]
    inference_ms: float = Field(description="Time of the forward pass the image was part of.")


class JPEGResponse(Response):
    media_type = "image/jpeg"


def _sniff(head: bytes) -> str | None:
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    return None


def _unprocessable(message: str) -> HTTPException:
    return HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, message)


def _decode(data: bytes, fmt: str, name: str, cfg: JobsConfig) -> BGRImage:
    """The image as BGR pixels, its size checked from the header before any pixel is decoded."""
    try:
        with Image.open(io.BytesIO(data), formats=[fmt]) as img:
            w, h = img.size
            if w * h > cfg.max_image_pixels:
                raise HTTPException(
                    status.HTTP_413_CONTENT_TOO_LARGE,
                    f"{name}: {w}x{h} is {w * h} pixels, more than jobs.max_image_pixels ({cfg.max_image_pixels})",
                )
            img.load()
            upright = ImageOps.exif_transpose(img).convert("RGB")
    except Image.DecompressionBombError as exc:
        raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, f"{name}: {exc}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:  # PIL's ways of saying "corrupt"
        raise _unprocessable(f"{name}: the {fmt} image is corrupt or truncated ({exc})") from None
    rgb = np.asarray(upright)
    return np.ascontiguousarray(rgb[:, :, ::-1])


def _check_query(
    cfg: AppConfig, labels: list[str], confidence: float | None, classes: list[str], model: str | None
) -> None:
    path = Path(cfg.model.path)
    if model is not None and model not in (cfg.model.path, path.name, path.stem):
        raise _unprocessable(f"model {model!r} is not loaded; this server runs only {path.name!r}")
    if confidence is not None and confidence < cfg.model.confidence:
        raise _unprocessable(
            f"confidence {confidence:g} is below the model's threshold {cfg.model.confidence:g} (model.confidence): "
            "weaker detections are discarded before they reach this endpoint"
        )
    unknown = sorted(set(classes) - set(labels))
    if unknown and labels:
        raise _unprocessable(f"classes {unknown} are not labels of this model (it has {sorted(set(labels))})")


def _unavailable(exc: Exception) -> HTTPException:
    return HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, f"inference is unavailable: {exc}")


def _detections(result: FrameResult, confidence: float | None, classes: list[str]) -> list[Detection]:
    t = result.tracks
    out = []
    for i in range(len(t)):
        label, conf = result.label_of(int(t.class_id[i])), float(t.confidence[i])
        if (confidence is None or conf >= confidence) and (not classes or label in classes):
            out.append(Detection(label=label, confidence=round(conf, 4), bbox=[round(float(v), 1) for v in t.xyxy[i]]))
    return out


@router.post(
    "/api/detect",
    summary="Detect objects in one image (JPEG, PNG or WebP): boxes as JSON, or with annotate=true a JPEG",
    response_model=DetectResult,
    responses={
        200: {"content": {"image/jpeg": {}}, "description": "JSON detections, or the annotated JPEG (annotate=true)."},
        413: {"model": Message, "description": "Over jobs.max_image_bytes or jobs.max_image_pixels."},
        415: {"model": Message, "description": "Not a JPEG, PNG or WebP image, or not the type it was declared as."},
        422: {"description": "Empty, corrupt or truncated image; a confidence, class or model the server lacks."},
        429: {"model": Message, "description": "jobs.max_detect_inflight images in flight; retry after Retry-After."},
        503: {"model": Message, "description": "The model is not loaded (yet), or inference did not answer in time."},
    },
)
async def detect(
    request: Request,
    server: ServerDep,
    jobs: JobsDep,
    file: Annotated[UploadFile, File(description="The image: JPEG, PNG or WebP.")],
    confidence: Annotated[
        float | None,
        Query(ge=0, le=1, description="Only detections at least this confident (not below model.confidence)."),
    ] = None,
    classes: Annotated[
        list[str] | None, Query(description="Only these labels (repeat the parameter, or separate with commas).")
    ] = None,
    model: Annotated[
        str | None, Query(max_length=512, description="The model to use: only the loaded one (its path or name).")
    ] = None,
    annotate: Annotated[bool, Query(description="Return the image as a JPEG with the boxes drawn.")] = False,
) -> Response:
    cfg: AppConfig = request.app.state.config
    inference = server.inference_health()
    wanted = [c.strip() for value in classes or [] for c in value.split(",") if c.strip()]
    _check_query(cfg, list(inference.labels.values()), confidence, wanted, model)
    name = file.filename or "upload"
    declared = (file.content_type or "").lower()
    if declared not in _FORMATS.values() and declared not in _GENERIC_TYPES:
        raise HTTPException(
            status.HTTP_415_UNSUPPORTED_MEDIA_TYPE, f"{name}: {declared} is not an image type this endpoint takes"
        )
    limit = cfg.jobs.max_image_bytes
    if file.size is not None and file.size > limit:
        raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, f"{name}: larger than jobs.max_image_bytes ({limit})")
    data = await file.read()
    if not data:
        raise _unprocessable(f"{name}: the file is empty")
    fmt = _sniff(data[:16])
    if fmt is None:
        raise HTTPException(status.HTTP_415_UNSUPPORTED_MEDIA_TYPE, f"{name}: not a JPEG, PNG or WebP image")
    if declared not in _GENERIC_TYPES and declared != _FORMATS[fmt]:
        raise HTTPException(status.HTTP_415_UNSUPPORTED_MEDIA_TYPE, f"{name}: sent as {declared} but it is {fmt}")
    if not inference.model_loaded:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "the model is not loaded yet", {"Retry-After": "5"})
    try:
        ticket = jobs.images.reserve()  # before the costly decode: a refused request costs none
    except Busy as exc:
        raise busy(exc) from None
    except LaneClosed as exc:
        raise _unavailable(exc) from None
    try:
        image = await run_in_threadpool(_decode, data, fmt, name, cfg.jobs)
    except BaseException:
        ticket.result.cancel()  # gives the place back
        raise
    future = jobs.images.detect(ticket, image)
    try:
        result = await asyncio.wait_for(asyncio.wrap_future(future), DETECT_TIMEOUT_S)
    except TimeoutError:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, f"inference did not answer within {DETECT_TIMEOUT_S:g}s"
        ) from None
    except (LaneClosed, ValueError) as exc:  # the lane closed (stopping), or the image could not be queued
        raise _unavailable(exc) from None
    detections = _detections(result, confidence, wanted)
    if annotate:
        boxes = [((d.bbox[0], d.bbox[1], d.bbox[2], d.bbox[3]), f"{d.label} {d.confidence:.2f}") for d in detections]
        jpeg = await run_in_threadpool(detections_jpeg, image, boxes, cfg.preview.jpeg_quality)
        return JPEGResponse(jpeg, headers={"X-Detections": str(len(detections))})
    out = DetectResult(
        model=Path(cfg.model.path).name,
        width=result.frame.width,
        height=result.frame.height,
        detections=detections,
        inference_ms=round(result.inference_ms, 1),
    )
    return Response(out.model_dump_json(), media_type="application/json")
