"""The FastAPI application factory; the stream server's life cycle follows the app's."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from streamsrv import __version__
from streamsrv.api.routers import cameras, events, health
from streamsrv.config.models import AppConfig
from streamsrv.runtime.server import StreamServer


def create_app(cfg: AppConfig, server: StreamServer | None = None) -> FastAPI:
    """Build the app; the server (created from ``cfg`` if not given) starts and stops with it."""
    srv = server or StreamServer(cfg)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if not srv.started:
            srv.start()
        try:
            yield
        finally:
            srv.stop()

    app = FastAPI(title="streamsrv", version=__version__, lifespan=lifespan)
    app.state.server = srv
    app.state.config = cfg
    app.state.api_key = cfg.server.api_key.get_secret_value() if cfg.server.api_key else None
    app.include_router(health.router)
    app.include_router(cameras.router)
    app.include_router(events.router)
    return app
