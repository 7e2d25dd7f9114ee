"""Cluster mode: requests about a camera another node runs are passed to that node, so one URL serves them all.

Stats, counts, snapshots, MJPEG (streamed as it comes) and WebRTC signalling of a camera not running here go to
its owner's ``advertise_url`` with the caller's credentials; the answer comes back as the owner gave it. A camera
nobody runs, or whose owner does not answer, gets 503 naming why (the node, or the reason it is unassigned).
An event's snapshot or clip this node does not hold is asked of the other live nodes in turn (the node that made it
keeps it, and the camera may have moved since); the first that has it answers, else this node's own 404.
A proxied request carries ``X-Streamsrv-Proxied`` and is never passed on again.

Example:
    >>> app.add_middleware(ClusterProxy, node=node, server=server)  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import re
from typing import TYPE_CHECKING
from urllib.parse import parse_qs

import httpx
import redis
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from streamsrv.cluster.view import ClusterView, read_view
from streamsrv.runtime.protocol import ServerApi

if TYPE_CHECKING:
    from streamsrv.cluster.node import ClusterNode

log = logging.getLogger(__name__)
PROXIED_HEADER = b"x-streamsrv-proxied"
_PATH = re.compile(r"^/api/cameras/(?P<camera>[^/]+)/(stats|counts|mjpeg|snapshot\.jpg|webrtc(/[^/]+)?)$")
_EVENT_PATH = re.compile(r"^/api/events/(?P<event>[0-9a-f]{32})/(?P<what>snapshot\.jpg|clip\.mp4)$")
_FORWARD = {b"authorization", b"content-type", b"accept", b"range", b"if-none-match"}
_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding"}


class ClusterProxy:
    """ASGI middleware in front of the app (cluster mode only)."""

    def __init__(
        self, app: ASGIApp, node: ClusterNode, server: ServerApi, shutdown: asyncio.Event, api_key: str | None
    ) -> None:
        self.app, self.node, self.server, self.shutdown, self.api_key = app, node, server, shutdown, api_key
        self.client = httpx.AsyncClient(timeout=httpx.Timeout(10.0, read=None), follow_redirects=False)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        match, event = _PATH.match(path), _EVENT_PATH.match(path)
        headers = dict(scope.get("headers") or [])
        if (match is None and event is None) or PROXIED_HEADER in headers or not self._authorized(scope, headers):
            # not ours to pass on; the app refuses what lacks the key, so a stranger learns nothing here
            await self.app(scope, receive, send)
            return
        if event is not None:
            await self._event_file(scope, receive, send, event["event"], event["what"], headers)
            return
        assert match is not None
        camera_id = match["camera"]
        if camera_id in self.server.running_camera_ids():
            await self.app(scope, receive, send)
            return
        try:
            view: ClusterView = await run_in_threadpool(read_view, self.node)
        except (redis.RedisError, OSError) as exc:
            await _answer(send, 503, f"camera {camera_id!r}: cluster state unavailable: {exc}")
            return
        if camera_id not in view.cameras:
            await self.app(scope, receive, send)  # the app's own 404
            return
        owner = view.owner(camera_id)
        if owner is None:
            await _answer(send, 503, f"camera {camera_id!r} runs on no node: {view.why_not_running(camera_id)}")
        elif owner.id == self.node.node_id:
            await self.app(scope, receive, send)  # ours, still starting
        elif not owner.alive or not owner.url:
            await _answer(send, 503, f"camera {camera_id!r}: its node {owner.id!r} is not alive; it moves soon")
        else:
            await self._forward(
                scope, receive, send, owner.url, f"camera {camera_id!r}: its node {owner.id!r}", headers
            )

    async def _event_file(
        self, scope: Scope, receive: Receive, send: Send, event_id: str, what: str, headers: dict[bytes, bytes]
    ) -> None:
        held = self.server.snapshots.get(event_id) if what == "snapshot.jpg" else self.server.clips.state(event_id)
        if held is not None:
            await self.app(scope, receive, send)
            return
        try:
            view: ClusterView = await run_in_threadpool(read_view, self.node)
        except (redis.RedisError, OSError):  # no way to know the other nodes now: what this one has is the answer
            await self.app(scope, receive, send)
            return
        for other in view.nodes.values():
            if other.id == self.node.node_id or not other.alive or not other.url:
                continue
            response = await self._open(scope, b"", other.url, headers)
            if response is None:
                continue
            if response.status_code == 404:
                await response.aclose()
                continue
            await self._answer_with(response, receive, send)
            return
        await self.app(scope, receive, send)  # nobody has it: the app's own 404

    def _authorized(self, scope: Scope, headers: dict[bytes, bytes]) -> bool:
        if self.api_key is None:
            return True
        auth = headers.get(b"authorization", b"").decode(errors="replace")
        given = auth[7:] if auth.lower().startswith("bearer ") else ""
        if not given:
            given = parse_qs(scope.get("query_string", b"").decode()).get("token", [""])[0]
        return hmac.compare_digest(given.encode(), self.api_key.encode())

    async def _forward(
        self, scope: Scope, receive: Receive, send: Send, base: str, whose: str, headers: dict[bytes, bytes]
    ) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        try:
            response = await self._send(scope, body, base, headers)
        except httpx.HTTPError as exc:
            await _answer(send, 503, f"{whose} at {base} does not answer: {type(exc).__name__}")
            return
        await self._answer_with(response, receive, send)

    async def _open(self, scope: Scope, body: bytes, base: str, headers: dict[bytes, bytes]) -> httpx.Response | None:
        """The node's streamed response, or None if it does not answer."""
        try:
            return await self._send(scope, body, base, headers)
        except httpx.HTTPError as exc:
            log.info("cluster proxy: %s does not answer: %s", base, type(exc).__name__)
            return None

    async def _send(self, scope: Scope, body: bytes, base: str, headers: dict[bytes, bytes]) -> httpx.Response:
        query = scope.get("query_string", b"").decode()
        url = f"{base}{scope['path']}" + (f"?{query}" if query else "")
        forwarded = {k.decode(): v.decode() for k, v in headers.items() if k in _FORWARD}
        forwarded[PROXIED_HEADER.decode()] = self.node.node_id
        request = self.client.build_request(scope["method"], url, headers=forwarded, content=body)
        return await self.client.send(request, stream=True)

    async def _answer_with(self, response: httpx.Response, receive: Receive, send: Send) -> None:
        """Pass the node's response on, status, headers and body as they come, then close it."""
        try:
            out_headers = [(k.encode(), v.encode()) for k, v in response.headers.items() if k.lower() not in _HOP]
            await send({"type": "http.response.start", "status": response.status_code, "headers": out_headers})
            await self._relay(response, receive, send)
        finally:
            await response.aclose()

    async def _relay(self, response: httpx.Response, receive: Receive, send: Send) -> None:
        """Pass the body on as it arrives (MJPEG never ends) until the client or this server goes."""

        async def pump() -> None:
            async for chunk in response.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})

        async def gone() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass

        tasks = [asyncio.ensure_future(t) for t in (pump(), gone(), self.shutdown.wait())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        except httpx.HTTPError as exc:
            log.info("cluster proxy: the owner's stream ended: %s", exc)
        finally:
            for t in tasks:
                t.cancel()
        try:
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except Exception:  # the client is gone already: nothing left to tell it
            return


async def _answer(send: Send, status_code: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    start: Message = {
        "type": "http.response.start",
        "status": status_code,
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
    }
    await send(start)
    await send({"type": "http.response.body", "body": body})
