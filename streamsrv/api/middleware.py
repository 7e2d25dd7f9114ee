"""Request limits and error shaping: oversized bodies get 413, and 422s never echo a camera password."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from fastapi import HTTPException, Request, status
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from streamsrv.config.models import redact_url


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int, setting: str = "server.max_body_bytes") -> None:
        super().__init__(
            status.HTTP_413_CONTENT_TOO_LARGE,
            f"request body is larger than {limit} bytes ({setting})",
        )


class BodySizeLimit:
    """Refuses request bodies over ``max_bytes``: at once from Content-Length, else while the body streams in.

    A pure ASGI middleware so a chunked upload without Content-Length is cut off after ``max_bytes`` instead of
    being buffered whole first. ``overrides`` maps a path to its own ``(max bytes, setting name)``, for uploads.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, overrides: Mapping[str, tuple[int, str]] | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.overrides = dict(overrides or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        max_bytes, setting = self.overrides.get(scope["path"], (self.max_bytes, "server.max_body_bytes"))
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > max_bytes):
            await self._refuse(scope, send, BodyTooLarge(max_bytes, setting))
            return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > max_bytes:
                    # an HTTPException, so FastAPI's body parsing passes it on as a 413 instead of a 400
                    raise BodyTooLarge(max_bytes, setting)
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracked_send)
        except BodyTooLarge as exc:
            if started:
                raise
            await self._refuse(scope, send, exc)

    @staticmethod
    async def _refuse(scope: Scope, send: Send, exc: HTTPException) -> None:
        response = JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers={"Connection": "close"})
        await response(scope, _no_body, send)


async def _no_body() -> Message:
    return {"type": "http.disconnect"}


def _redacted(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # a NaN or Infinity from the body: JSON cannot carry it back (it would be a 500)
    if isinstance(value, str):
        return redact_url(_utf8(value))
    if isinstance(value, Exception):  # a validator's ValueError in ``ctx``: its message, not ``{}``
        return redact_url(_utf8(str(value)))
    if isinstance(value, dict):
        return {_redacted(k): _redacted(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redacted(v) for v in value]
    return value


def _utf8(text: str) -> str:
    """``text`` without lone surrogates (a form field's bytes that were not UTF-8 arrive as such): they cannot be
    written as UTF-8 JSON (it would be a 500), so they are shown escaped."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


async def redacted_validation_error(request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's 422 body, with any URL password in the echoed input replaced by ***."""
    assert isinstance(exc, RequestValidationError)
    return JSONResponse(
        status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
        content={"detail": jsonable_encoder(_redacted(exc.errors()))},
    )
