"""Shared request dependencies: the app state and API-key authentication."""

from __future__ import annotations

import asyncio
import hmac
import logging
from typing import Annotated

from fastapi import Depends, HTTPException, Query, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from streamsrv.runtime.protocol import ServerApi

log = logging.getLogger(__name__)
_bearer = HTTPBearer(auto_error=False)


def get_server(request: Request) -> ServerApi:
    server: ServerApi = request.app.state.server
    return server


def get_shutdown(request: Request) -> asyncio.Event:
    """Set once the HTTP server starts shutting down (``streamsrv.api.app.HttpServer``): endless responses end then."""
    shutdown: asyncio.Event = request.app.state.shutdown
    return shutdown


def require_api_key(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    token: Annotated[
        str | None, Query(description="The API key, for clients that cannot send headers (<img>, EventSource).")
    ] = None,
) -> None:
    """Refuse the request unless it carries the configured bearer token, as a header or ``?token=``
    (constant-time compare)."""
    expected: str | None = request.app.state.api_key
    if expected is None:
        return
    given = credentials.credentials if credentials is not None else (token or "")
    if not hmac.compare_digest(given.encode(), expected.encode()):
        log.warning(
            "refused %s %s from %s: %s API key",
            request.method,
            request.url.path,
            request.client.host if request.client else "?",
            "wrong" if given else "no",
        )
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, "missing or wrong API key", headers={"WWW-Authenticate": "Bearer"}
        )


ServerDep = Annotated[ServerApi, Depends(get_server)]
ShutdownDep = Annotated[asyncio.Event, Depends(get_shutdown)]
Authenticated = Depends(require_api_key)
