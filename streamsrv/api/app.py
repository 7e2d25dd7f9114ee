"""The FastAPI application factory, and the HTTP server that runs it; the stream server's life cycle follows the
app's."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.staticfiles import StaticFiles

from streamsrv import __version__
from streamsrv.api.cluster_proxy import ClusterProxy
from streamsrv.api.middleware import BodySizeLimit, redacted_validation_error
from streamsrv.api.routers import caches as caches_router
from streamsrv.api.routers import (
    cameras,
    capacity,
    clips,
    cluster,
    detect,
    events,
    health,
    jobs,
    metrics,
    outputs,
    preview,
    probe,
    rules,
)
from streamsrv.cluster.metrics import ClusterCollector
from streamsrv.cluster.node import ClusterNode
from streamsrv.cluster.registry import ClusterCameraRegistry
from streamsrv.config.cluster import advertise_url
from streamsrv.config.models import AppConfig
from streamsrv.errors import NotFoundError
from streamsrv.events.redis_bus import RedisBus
from streamsrv.jobs.manager import JobManager
from streamsrv.jobs.store import JobStats
from streamsrv.outputs.homeassistant import CameraCounts, Counts
from streamsrv.outputs.manager import OutputManager
from streamsrv.outputs.metrics import OutputsCollector
from streamsrv.runtime.caches import Caches, CacheSize, event_cache_sizes
from streamsrv.runtime.capacity import CapacityRefused
from streamsrv.runtime.metrics import ServerMetrics
from streamsrv.runtime.protocol import ServerApi
from streamsrv.runtime.registry import CameraRegistry, ConfigFileStore
from streamsrv.runtime.server import StreamServer


def create_app(cfg: AppConfig, server: ServerApi | None = None, config_path: Path | None = None) -> FastAPI:
    """Build the app; the server (a ``StreamServer`` created from ``cfg`` if not given) starts and stops with it.

    Any ``ServerApi`` will do: the API tests give one that runs no process (tests/support/fake_server.py).

    ``config_path`` is the file ``cfg`` came from: with ``server.persist`` on, camera and rule changes made
    through the API are written back to it.
    """
    node: ClusterNode | None = None
    srv: ServerApi
    registry: CameraRegistry
    if cfg.cluster is not None and server is None:
        node, srv, registry = cluster_parts(cfg)
    else:
        srv = server or StreamServer(cfg)
        store = ConfigFileStore(config_path) if config_path is not None and cfg.server.persist else None
        registry = CameraRegistry(srv, store)
    job_manager = JobManager(srv, cfg)
    caches = Caches()  # the preview adds its own in its router's lifespan
    caches.add(lambda: event_cache_sizes(cfg.events, srv.snapshots, srv.bus))
    caches.add(lambda: [job_results_size(job_manager.stats())])
    server_metrics = ServerMetrics(srv, job_manager, caches)
    output_manager = OutputManager(cfg.outputs, srv.bus, cfg.events.redis_url, rule_counts(srv))
    server_metrics.registry.register(OutputsCollector(output_manager))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        output_manager.start()  # before the cameras: their first events go out too
        if not srv.started:
            srv.start()
        if node is not None:
            node.start()  # after the server: it starts cameras on it
        job_manager.start()
        try:
            yield
        finally:
            job_manager.stop()
            server_metrics.close()
            if node is not None:
                node.stop()  # releases the leases: the cameras move at once
            srv.stop()
            output_manager.stop()  # after the cameras: their last events (camera.offline) go out too

    app = FastAPI(title="streamsrv", version=__version__, lifespan=lifespan)
    app.state.server = srv
    app.state.config = cfg
    app.state.api_key = cfg.server.api_key.get_secret_value() if cfg.server.api_key else None
    app.state.registry = registry
    app.state.metrics = server_metrics
    app.state.caches = caches
    app.state.jobs = job_manager
    app.state.outputs = output_manager
    app.state.shutdown = asyncio.Event()
    app.state.cluster = node
    if node is not None:
        server_metrics.registry.register(ClusterCollector(node))
        app.add_middleware(ClusterProxy, node=node, server=srv, shutdown=app.state.shutdown, api_key=app.state.api_key)
    app.add_middleware(BodySizeLimit, max_bytes=cfg.server.max_body_bytes, overrides=jobs.upload_limits(cfg.jobs))
    app.add_exception_handler(RequestValidationError, redacted_validation_error)
    app.add_exception_handler(CapacityRefused, capacity.refused)
    app.include_router(health.router)
    app.include_router(cameras.router)
    app.include_router(capacity.router)
    app.include_router(rules.router)
    app.include_router(probe.router)
    app.include_router(metrics.router)
    app.include_router(caches_router.router)
    app.include_router(preview.router)
    app.mount("/static", StaticFiles(directory=preview.WEB_DIR), name="static")
    app.include_router(events.router)
    app.include_router(clips.router)
    app.include_router(detect.router)
    app.include_router(jobs.router)
    app.include_router(outputs.router)
    app.include_router(cluster.router)
    return app


def cluster_parts(cfg: AppConfig) -> tuple[ClusterNode, StreamServer, ClusterCameraRegistry]:
    """Cluster mode: the local server starts no camera by itself (the node starts those it wins), its events are
    fenced by the node's leases, and the API's registry is the one in Redis."""
    assert cfg.cluster is not None and cfg.events.redis_url is not None
    nodes: list[ClusterNode] = []
    bus = RedisBus(
        cfg.events.redis_url,
        stream_maxlen=cfg.events.stream_maxlen,
        buffer_max_events=cfg.events.buffer_max_events,
        fence=lambda event: nodes[0].fence(event),
    )
    srv = StreamServer(cfg.model_copy(update={"cameras": []}), bus=bus)
    node = ClusterNode(cfg, srv, bus, advertise_url(cfg.cluster, cfg.server.host, cfg.server.port))
    nodes.append(node)
    return node, srv, ClusterCameraRegistry(srv, node.store, cfg.base_dir, node.registry_changed)


def rule_counts(server: ServerApi) -> Counts:
    """What Home Assistant discovery reads: each running camera's line counts and zone occupancy."""

    def counts() -> dict[str, CameraCounts]:
        out = {}
        for camera_id in server.running_camera_ids():
            try:
                out[camera_id] = CameraCounts(server.line_counts(camera_id), server.occupancy(camera_id))
            except NotFoundError:  # removed meanwhile
                continue
        return out

    return counts


class HttpServer(uvicorn.Server):
    """uvicorn serving ``app``, whose endless responses (event streams, MJPEG) end as soon as shutdown begins.

    uvicorn ends the app's lifespan only once every open response has finished, and these never finish by
    themselves: it would wait out ``timeout_graceful_shutdown``, then cancel them mid-body, which logs a
    CancelledError traceback and leaves each client a truncated chunked body. Setting ``app.state.shutdown``
    first lets them end their bodies properly, so uvicorn finds the connections closing and moves on at once.
    """

    def __init__(self, app: FastAPI, **options: Any) -> None:
        super().__init__(uvicorn.Config(app, **options))
        self.app = app

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self.app.state.shutdown.set()
        await super().shutdown(sockets)


def job_results_size(stats: JobStats) -> CacheSize:
    """The finished jobs kept with their results (in memory, or in Redis when ``events.redis_url`` is set)."""
    return CacheSize(
        cache="job_results",
        items=stats.done + stats.failed,
        bytes=stats.result_bytes,
        max_bytes=stats.result_store_bytes,
    )
