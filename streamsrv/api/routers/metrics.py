"""Prometheus metrics (``GET /metrics``); names and meanings in docs/metrics.md.

Unauthenticated, like the health probes, so a scraper needs no secret: the metrics name cameras by id and
never carry a URL.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST

from streamsrv.runtime.metrics import ServerMetrics

router = APIRouter(tags=["metrics"])


class PrometheusResponse(Response):
    media_type = CONTENT_TYPE_LATEST


@router.get(
    "/metrics",
    response_class=PrometheusResponse,
    summary="Metrics in the Prometheus text format",
)
def metrics(request: Request) -> PrometheusResponse:
    registry: ServerMetrics = request.app.state.metrics
    return PrometheusResponse(registry.render())
