"""Paced API load on a running server: JSON clients polling the read endpoints, and MJPEG viewers of each camera.

Used by tests/e2e/test_api_load.py (everything is answered, nothing starves) and benchmarks/neighbours.py (what
the load costs the cameras' processed fps).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import httpx

CLIENTS = 16
# Each client is paced: clients that send as fast as answers come would put more load on a faster server, so
# what is measured would change with the machine. 16 x 8/s is a busy control room polling every 125 ms.
REQUESTS_PER_CLIENT_S = 8.0
MJPEG_VIEWERS_PER_CAMERA = 2


@dataclass
class Load:
    statuses: Counter[int] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    mjpeg_parts: Counter[str] = field(default_factory=Counter)


def read_paths(cameras: Sequence[str]) -> tuple[str, ...]:
    """What the JSON clients poll, in turn."""
    return (
        *(f"/api/cameras/{c}/stats" for c in cameras),
        "/api/cameras",
        "/api/events?limit=100",
        "/metrics",
        "/readyz",
        "/api/preview/stats",
    )


async def _client(http: httpx.AsyncClient, paths: Sequence[str], n: int, deadline: float, load: Load) -> None:
    i = n
    next_at = time.monotonic()
    while time.monotonic() < deadline:
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        next_at += 1 / REQUESTS_PER_CLIENT_S
        path = paths[i % len(paths)]
        i += 1
        try:
            response = await http.get(path)
        except httpx.HTTPError as exc:
            load.failures.append(f"{path}: {type(exc).__name__}: {exc}")
            continue
        load.statuses[response.status_code] += 1
        if response.status_code >= 500:
            load.failures.append(f"{path}: {response.status_code} {response.text[:200]}")


async def _viewer(http: httpx.AsyncClient, camera_id: str, deadline: float, load: Load) -> None:
    try:
        async with http.stream("GET", f"/api/cameras/{camera_id}/mjpeg") as response:
            load.statuses[response.status_code] += 1
            async for chunk in response.aiter_bytes():
                load.mjpeg_parts[camera_id] += chunk.count(b"--streamsrv-frame")
                if time.monotonic() >= deadline:
                    return
    except httpx.HTTPError as exc:
        load.failures.append(f"mjpeg {camera_id}: {type(exc).__name__}: {exc}")


async def api_load(base_url: str, cameras: Sequence[str], seconds: float, api_key: str | None = None) -> Load:
    """``seconds`` of load: ``CLIENTS`` paced JSON clients and ``MJPEG_VIEWERS_PER_CAMERA`` viewers per camera."""
    load = Load()
    deadline = time.monotonic() + seconds
    paths = read_paths(cameras)
    # httpx keeps idle connections 5 s, as long as uvicorn keeps them open (timeout_keep_alive 5 s): a connection
    # idle that long can be closed by the server just as the client sends on it (a ReadError that is neither side's
    # fault, and that browsers retry). Dropping idle connections sooner leaves every failure counted a real one.
    limits = httpx.Limits(max_connections=CLIENTS + 2 * MJPEG_VIEWERS_PER_CAMERA * len(cameras), keepalive_expiry=2.0)
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    async with httpx.AsyncClient(base_url=base_url, timeout=20, limits=limits, headers=headers) as http:
        tasks = [_client(http, paths, n, deadline, load) for n in range(CLIENTS)]
        tasks += [_viewer(http, c, deadline, load) for c in cameras for _ in range(MJPEG_VIEWERS_PER_CAMERA)]
        # Bounded twice over: every loop ends at the deadline and every request times out after 20 s.
        await asyncio.wait_for(asyncio.gather(*tasks), seconds + 60)
    return load
