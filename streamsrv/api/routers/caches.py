"""How full the server's bounded caches are (``GET /api/caches``); the same numbers as ``streamsrv_cache_*`` in
``/metrics``. See ``streamsrv.runtime.caches``."""

from __future__ import annotations

from fastapi import APIRouter, Request

from streamsrv.api.deps import Authenticated
from streamsrv.runtime.caches import Caches, CacheSize

router = APIRouter(tags=["caches"], dependencies=[Authenticated])


@router.get(
    "/api/caches",
    summary="Entries and bytes held by each bounded cache: event snapshots, events, job results, preview frames",
)
def list_caches(request: Request) -> list[CacheSize]:
    caches: Caches = request.app.state.caches
    return caches.sizes()
