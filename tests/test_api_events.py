"""The events API over real HTTP: the app under uvicorn with a real file camera (the 360p clip, looping, 3 frames/s
inferred), the real person model and a tripwire across the concourse; history and its filters, the SSE stream (live,
resumed, kept alive), the WebSocket, snapshot JPEGs, the API key, and `streamsrv events` following the SSE stream."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import ClientConnection, connect

from streamsrv.api.app import create_app
from streamsrv.api.routers import events as events_router
from streamsrv.cli import main
from streamsrv.config.models import AppConfig
from streamsrv.events import Event
from streamsrv.runtime.server import StreamServer
from tests.support.uvicorn_thread import serve_in_thread
from tests.support.waiting import wait_for

pytestmark = pytest.mark.slow

API_KEY = "test-key-2f9c"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
CAMERA = "lobby"


@dataclass
class Live:
    url: str
    http: httpx.Client
    server: StreamServer
    idle_subscribers: int = 0  # the bus's own subscribers (the server's), before any client connected

    def history(self, **params: Any) -> dict[str, Any]:
        response = self.http.get("/api/events", params=params)
        assert response.status_code == 200, response.text
        page: dict[str, Any] = response.json()
        return page

    def ws_url(self, query: str) -> str:
        return f"ws://{self.url.removeprefix('http://')}/api/events/ws?{query}"


@pytest.fixture(scope="module")
def live(clip_360p: Path, person_model: Path) -> Iterator[Live]:
    cfg = AppConfig.model_validate(
        {
            "model": {"path": str(person_model), "labels": {"Normal": "person", "Fall": "person"}},
            "inference": {"threads": 1, "device": "cpu", "stale_after_s": 5},
            "capacity": {"degrade": False},  # the pipeline as it is: no governor lowering detect fps
            "server": {"api_key": API_KEY},
            "cameras": [
                {
                    "id": CAMERA,
                    "url": str(clip_360p),
                    "loop": True,
                    "detect_fps": 3,
                    # People walk up and down the image; this line crosses the middle of the concourse.
                    "rules": {"lines": [{"name": "mid", "points": [[0, 200], [640, 200]]}]},
                }
            ],
        }
    )
    app = create_app(cfg)
    with serve_in_thread(app) as url, httpx.Client(base_url=url, headers=AUTH, timeout=30) as http:
        live = Live(url, http, app.state.server)
        live.idle_subscribers = live.server.bus.stats().subscribers
        wait_for(lambda: len(live.history(type="line.cross")["events"]) >= 3, 180, "three line crossings")
        yield live


def sse_messages(response: httpx.Response) -> Iterator[dict[str, str]]:
    """Each SSE message's fields (comments under ':'), as the stream delivers them."""
    fields: dict[str, str] = {}
    for line in response.iter_lines():
        if not line:
            if fields:
                yield fields
            fields = {}
            continue
        name, _, value = line.partition(":")
        fields[name] = fields[name] + "\n" + value.strip() if name in fields else value.strip()


def next_events(messages: Iterator[dict[str, str]], n: int) -> list[tuple[str, Event]]:
    out: list[tuple[str, Event]] = []
    for message in messages:
        if "data" in message:
            out.append((message["id"], Event.from_json(message["data"])))
            if len(out) == n:
                break
    return out


def test_history_lists_events_oldest_first_and_filters_them(live: Live) -> None:
    everything = live.history(limit=1000)["events"]
    assert everything[0]["type"] == "camera.online" and everything[0]["seq"] == 1
    assert [e["seq"] for e in everything] == list(range(1, len(everything) + 1))
    assert {e["camera_id"] for e in everything} == {CAMERA}

    crossings = live.history(type="line.cross", camera=CAMERA)["events"]
    assert len(crossings) >= 3
    assert all(e["type"] == "line.cross" and e["line"] == "mid" and e["label"] == "person" for e in crossings)
    assert {e["direction"] for e in crossings} <= {"in", "out"}
    assert live.history(camera="elsewhere") == {"events": [], "cursor": None}

    newest_two = live.history(type="line.cross", limit=2)
    assert len(newest_two["events"]) == 2
    assert newest_two["events"][0]["seq"] >= crossings[-2]["seq"]

    since = crossings[1]["ts"]
    recent = live.history(since=since)["events"]
    assert recent and all(e["ts"] >= since for e in recent)
    assert crossings[1]["id"] in {e["id"] for e in recent}

    # Paging forward: events after a page's cursor are exactly the newer ones.
    first = live.history(limit=1, after="0")
    assert first["events"][0]["seq"] == 1
    following = live.history(limit=3, after=first["cursor"])["events"]
    assert [e["seq"] for e in following] == [2, 3, 4]
    wait_for(lambda: bool(live.history(type="line.cross", after=newest_two["cursor"])["events"]), 120, "a new crossing")
    newer = live.history(type="line.cross", after=newest_two["cursor"])
    assert newer["events"][0]["seq"] > newest_two["events"][-1]["seq"]
    assert live.history(after=live.history(limit=1)["cursor"], camera="elsewhere")["cursor"] is not None


@pytest.mark.parametrize(
    ("params", "field", "value"),
    [
        ({"type": "line.crossing"}, "type", "line.crossing"),
        ({"camera": "no such camera"}, "camera", "no such camera"),
        ({"limit": "0"}, "limit", "0"),
        ({"limit": "5000"}, "limit", "5000"),
        ({"since": "yesterday"}, "since", "yesterday"),
        ({"since": "nan"}, "since", "nan"),
        ({"after": "latest"}, "after", "latest"),
        ({"after": "5-0"}, "after", "5-0"),  # a Redis-style cursor; this server's bus is in-process
        ({"since": "1", "after": "1"}, "after", "1"),
    ],
)
def test_history_refuses_bad_filters_naming_the_field(
    live: Live, params: dict[str, str], field: str, value: str
) -> None:
    response = live.http.get("/api/events", params=params)
    assert response.status_code == 422, response.text
    [error] = response.json()["detail"]
    assert error["loc"] == ["query", field]
    assert error["input"] == value


def test_the_api_key_may_come_as_a_token_parameter_for_browsers(live: Live) -> None:
    with httpx.Client(base_url=live.url, timeout=10) as browser:
        assert browser.get("/api/events", params={"token": API_KEY, "type": "line.cross"}).status_code == 200
        with browser.stream("GET", "/api/events/stream", params={"token": API_KEY, "camera": CAMERA}) as response:
            assert response.status_code == 200
            assert "retry" in next(sse_messages(response))


def test_every_endpoint_needs_the_api_key(live: Live) -> None:
    event_id = live.history(type="line.cross", limit=1)["events"][0]["id"]
    for key in (None, "wrong-key"):
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        with httpx.Client(base_url=live.url, headers=headers, timeout=10) as anonymous:
            for path in ("/api/events", "/api/events/stream", f"/api/events/{event_id}/snapshot.jpg"):
                response = anonymous.get(path)
                assert response.status_code == 401, (path, response.text)
                assert response.headers["www-authenticate"] == "Bearer"
        for query in ("", f"token={key}" if key else "token="):
            with pytest.raises(InvalidStatus) as refused:
                connect(live.ws_url(query), additional_headers=headers, open_timeout=10).close()
            assert refused.value.response.status_code == 401


@pytest.mark.parametrize("resume_with", ["last-event-id", "after"])
def test_sse_resumes_after_a_cursor_with_exactly_the_events_that_follow(live: Live, resume_with: str) -> None:
    first = live.history(limit=1, after="0")
    expected = live.history(limit=3, after=first["cursor"])["events"]
    headers = {"Last-Event-ID": first["cursor"]} if resume_with == "last-event-id" else {}
    params = {"after": first["cursor"]} if resume_with == "after" else {}
    with live.http.stream("GET", "/api/events/stream", headers=headers, params=params) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        messages = sse_messages(response)
        opening = next(messages)
        assert "retry" in opening and "data" not in opening
        got = next_events(messages, 3)
    assert [event.model_dump(mode="json") for _, event in got] == expected
    cursors = [cursor for cursor, _ in got]
    assert len(set(cursors)) == 3 and first["cursor"] not in cursors


def test_sse_delivers_live_events_matching_its_filters(live: Live) -> None:
    before = live.history(limit=1)["events"][-1]["seq"]
    with live.http.stream("GET", "/api/events/stream", params={"type": "line.cross", "camera": CAMERA}) as response:
        assert response.status_code == 200
        [(_, event)] = next_events(sse_messages(response), 1)
    assert event.type == "line.cross" and event.camera_id == CAMERA
    assert event.seq > before
    assert event.id in {e["id"] for e in live.history(since=event.ts)["events"]}


def test_sse_sends_keepalive_comments_while_nothing_matches(live: Live, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(events_router, "SSE_KEEPALIVE_S", 0.2)
    with live.http.stream("GET", "/api/events/stream", params={"camera": "elsewhere"}) as response:
        messages = sse_messages(response)
        next(messages)  # the opening comment and retry hint
        assert next(messages) == {"": "keep-alive"}


def settled_subscribers(live: Live) -> int:
    """The bus's subscriber count once every client stream is gone: a stream an earlier test closed is let go a
    moment after its client leaves, and counting it would skew a baseline."""
    idle = live.idle_subscribers
    wait_for(lambda: live.server.bus.stats().subscribers == idle, 10, "earlier tests' streams to be released")
    return idle


def test_a_client_that_leaves_releases_its_subscription_before_any_write(live: Live) -> None:
    baseline = settled_subscribers(live)
    # Nothing matches and keep-alives are 15 s apart: only noticing the closed connection releases these.
    with live.http.stream("GET", "/api/events/stream", params={"camera": "elsewhere"}) as response:
        messages = sse_messages(response)  # kept: a discarded iterator would close the connection
        next(messages)
        wait_for(lambda: live.server.bus.stats().subscribers == baseline + 1, 10, "the SSE subscription")
    wait_for(lambda: live.server.bus.stats().subscribers == baseline, 10, "the SSE subscription to close")
    with connect(live.ws_url("camera=elsewhere"), additional_headers=AUTH, open_timeout=10):
        wait_for(lambda: live.server.bus.stats().subscribers == baseline + 1, 10, "the WebSocket subscription")
    wait_for(lambda: live.server.bus.stats().subscribers == baseline, 10, "the WebSocket subscription to close")


def test_sse_refuses_a_bad_last_event_id_naming_the_header(live: Live) -> None:
    response = live.http.get("/api/events/stream", headers={"Last-Event-ID": "soon"})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["header", "last-event-id"]


def received(ws: ClientConnection, n: int) -> list[Event]:
    return [Event.from_json(ws.recv(timeout=60)) for _ in range(n)]


def test_websocket_replays_since_then_follows_live_events(live: Live) -> None:
    crossings = live.history(type="line.cross")["events"]
    since = crossings[0]["ts"]
    replayed = live.history(type="line.cross", since=since)["events"]
    with connect(live.ws_url(f"type=line.cross&since={since}"), additional_headers=AUTH, open_timeout=10) as ws:
        got = received(ws, len(replayed) + 1)
    assert [e.model_dump(mode="json") for e in got[: len(replayed)]] == replayed
    assert got[-1].type == "line.cross" and got[-1].seq > replayed[-1]["seq"]


def test_websocket_authenticates_with_a_query_parameter_for_browsers(live: Live) -> None:
    with connect(live.ws_url(f"token={API_KEY}&camera={CAMERA}"), open_timeout=10) as ws:
        [event] = received(ws, 1)
    assert event.camera_id == CAMERA


def test_websocket_refuses_bad_filters_before_the_upgrade(live: Live) -> None:
    with pytest.raises(InvalidStatus) as refused:
        connect(live.ws_url("type=line.crossing"), additional_headers=AUTH, open_timeout=10).close()
    assert refused.value.response.status_code == 422
    [error] = json.loads(refused.value.response.body or b"{}")["detail"]
    assert error["loc"] == ["query", "type"] and error["input"] == "line.crossing"


def test_snapshot_of_a_crossing_is_a_jpeg_of_the_frame(live: Live) -> None:
    crossing = live.history(type="line.cross", limit=1)["events"][0]
    response = live.http.get(f"/api/events/{crossing['id']}/snapshot.jpg")
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/jpeg"
    image = cv2.imdecode(np.frombuffer(response.content, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None and image.shape == (360, 640, 3)


def test_snapshot_is_404_for_unknown_and_boxless_events_and_422_for_a_malformed_id(live: Live) -> None:
    online = live.history(type="camera.online")["events"][0]
    for event_id in ("0" * 32, online["id"]):
        response = live.http.get(f"/api/events/{event_id}/snapshot.jpg")
        assert response.status_code == 404, response.text
        assert event_id in response.json()["detail"]
    response = live.http.get("/api/events/not-an-id/snapshot.jpg")
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["path", "event_id"]


def test_openapi_documents_the_event_endpoints(live: Live) -> None:
    paths = live.http.get("/openapi.json").json()["paths"]
    history = paths["/api/events"]["get"]
    assert {"camera", "type", "since", "after", "limit"} <= {p["name"] for p in history["parameters"]}
    assert "text/event-stream" in paths["/api/events/stream"]["get"]["responses"]["200"]["content"]
    assert "image/jpeg" in paths["/api/events/{event_id}/snapshot.jpg"]["get"]["responses"]["200"]["content"]


@pytest.fixture
def cli_logging() -> Iterator[None]:
    """The CLI installs its own stderr handler on the root logger; later tests must not write to it."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:], root.level = handlers, level


@pytest.mark.usefixtures("cli_logging")
def test_cli_follows_the_sse_stream_after_replaying_history(live: Live, capsys: pytest.CaptureFixture[str]) -> None:
    newest = live.history(type="line.cross", limit=2)["events"]
    argv = ["events", "--url", live.url, "--api-key", API_KEY, "--type", "line.cross", "--replay", "2"]
    assert main([*argv, "--max-events", "3"]) == 0
    printed = [Event.from_json(line) for line in capsys.readouterr().out.splitlines()]
    assert len(printed) == 3 and all(e.type == "line.cross" for e in printed)
    assert printed[0].seq >= newest[0]["seq"]
    assert printed[0].seq < printed[1].seq < printed[2].seq


@pytest.mark.usefixtures("cli_logging")
def test_cli_reports_a_refused_api_key(live: Live, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["events", "--url", live.url, "--api-key", "wrong", "--max-events", "1"]) == 2
    assert "401" in capsys.readouterr().err
