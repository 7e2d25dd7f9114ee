"""The events API through the real app, in-process on a ``FakeServer``: history and its filters, the SSE replay,
the WebSocket, and snapshot JPEGs, from events the real rule engine makes of fed tracks on the real in-process bus.

tests/test_api_events.py runs the same API over real HTTP with the model on a clip (live SSE, keep-alives, resuming
streams, the ``streamsrv events`` client); here each check takes milliseconds.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient
from starlette.testclient import WebSocketDenialResponse

from streamsrv.events import Event
from tests.support.builders import frame_result, track, tracks
from tests.support.fake_server import FakeServer, app_config, serve_in_process

CAMERA = "lobby"
SIZE = (640, 360)


@pytest.fixture
def app(tmp_path: Any) -> Iterator[tuple[TestClient, FakeServer]]:
    cfg = app_config(
        cameras=[
            {
                "id": CAMERA,
                "url": "rtsp://cam/lobby",
                "rules": {"lines": [{"name": "mid", "points": [[0, 180], [640, 180]]}]},
            },
            {"id": "quiet", "url": "rtsp://cam/quiet"},
        ],
        jobs={"spool_dir": str(tmp_path / "spool")},
    )
    with serve_in_process(cfg) as served:
        yield served


@pytest.fixture
def http(app: tuple[TestClient, FakeServer]) -> TestClient:
    return app[0]


def cross(server: FakeServer, times: int, start_s: float = 0.0, keep_frames: bool = False) -> None:
    """A person walks across the line ``times`` times, down then up; with ``keep_frames`` each frame's picture is
    held (as a ring would), so the crossings get snapshots."""
    ts = start_s
    for n in range(times):
        ys = range(60, 320, 40) if n % 2 == 0 else range(300, 40, -40)
        for y in ys:
            result = frame_result(CAMERA, tracks(track(1, (300, y - 50, 340, y + 50))), ts=ts, size=SIZE)
            if keep_frames:
                server.set_frame(CAMERA, (result.frame, np.full((SIZE[1], SIZE[0], 3), 90, np.uint8)))
            server.feed(result)
            ts += 0.5
        ts += 3.0  # past the line's cooldown


def history(http: TestClient, **params: Any) -> dict[str, Any]:
    response = http.get("/api/events", params=params)
    assert response.status_code == 200, response.text
    page: dict[str, Any] = response.json()
    return page


def test_history_lists_events_oldest_first_and_filters_them(app: tuple[TestClient, FakeServer]) -> None:
    http, server = app
    cross(server, 3)

    everything = history(http, limit=1000)["events"]
    crossings = history(http, type="line.cross")["events"]

    assert {(e["type"], e["camera_id"]) for e in everything[:2]} == {
        ("camera.online", CAMERA),
        ("camera.online", "quiet"),
    }
    assert len(crossings) == 3
    assert all(e["line"] == "mid" and e["label"] == "person" for e in crossings)
    assert [e["direction"] for e in crossings] == ["in", "out", "in"]
    assert [e["type"] for e in history(http, camera="quiet")["events"]] == ["camera.online"]
    assert history(http, camera="elsewhere") == {"events": [], "cursor": None}
    newest_two = history(http, limit=2)["events"]
    assert [e["id"] for e in newest_two] == [e["id"] for e in everything[-2:]]
    since = history(http, since=crossings[1]["ts"], type="line.cross")["events"]
    assert [e["id"] for e in since] == [e["id"] for e in crossings[1:]]


def test_history_pages_with_cursors(app: tuple[TestClient, FakeServer]) -> None:
    http, server = app
    cross(server, 3)
    everything = history(http, limit=1000)["events"]

    first = history(http, limit=1)
    assert first["events"][0]["id"] == everything[-1]["id"], "without after: the newest"
    page = history(http, after=history(http, after="0", limit=1)["cursor"], limit=3)
    assert [e["id"] for e in page["events"]] == [e["id"] for e in everything[1:4]]
    assert history(http, after=page["cursor"], camera="elsewhere")["cursor"] == page["cursor"]


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
    http: TestClient, params: dict[str, str], field: str, value: str
) -> None:
    response = http.get("/api/events", params=params)

    assert response.status_code == 422, response.text
    [error] = response.json()["detail"]
    assert error["loc"] == ["query", field]
    assert error["input"] == value


def sse_events(text: str) -> list[tuple[str, Event]]:
    messages = [
        dict(line.split(": ", 1) for line in block.splitlines() if ": " in line) for block in text.split("\n\n")
    ]
    return [(m["id"], Event.from_json(m["data"])) for m in messages if "data" in m]


def test_sse_replays_since_and_ends_at_shutdown(app: tuple[TestClient, FakeServer]) -> None:
    http, server = app
    cross(server, 2)
    crossings = history(http, type="line.cross")
    http.app.state.shutdown.set()  # type: ignore[attr-defined]  # the stream ends itself then: a finite body here

    response = http.get("/api/events/stream", params={"type": "line.cross", "since": 0})

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.text.startswith(": streamsrv events\nretry: ")
    got = sse_events(response.text)
    assert [event.id for _, event in got] == [e["id"] for e in crossings["events"]]
    assert got[-1][0] == crossings["cursor"], "each message's id is its cursor"


def test_sse_refuses_a_bad_last_event_id_naming_the_header(http: TestClient) -> None:
    response = http.get("/api/events/stream", headers={"Last-Event-ID": "not-a-cursor"})

    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["header", "last-event-id"]


def test_websocket_replays_since_then_follows_live_events(app: tuple[TestClient, FakeServer]) -> None:
    http, server = app
    cross(server, 1)
    replayed = history(http, camera=CAMERA)["events"]

    with http.websocket_connect(f"/api/events/ws?camera={CAMERA}&since=0") as socket:
        got = [Event.from_json(socket.receive_text()) for _ in replayed]
        cross(server, 1, start_s=100.0)
        live = Event.from_json(socket.receive_text())

    assert [e.model_dump(mode="json") for e in got] == replayed
    assert live.type == "line.cross" and live.seq > replayed[-1]["seq"] and live.direction == "out"


def test_websocket_refuses_bad_filters_before_the_upgrade(http: TestClient) -> None:
    with pytest.raises(WebSocketDenialResponse) as refused, http.websocket_connect("/api/events/ws?type=line.crossing"):
        pass

    assert refused.value.status_code == 422
    (error,) = refused.value.json()["detail"]
    assert error["loc"] == ["query", "type"] and error["input"] == "line.crossing"


def test_snapshot_of_a_crossing_is_a_jpeg_of_its_frame(app: tuple[TestClient, FakeServer]) -> None:
    http, server = app
    cross(server, 1, keep_frames=True)
    (crossing,) = history(http, type="line.cross")["events"]

    response = http.get(f"/api/events/{crossing['id']}/snapshot.jpg")

    assert response.status_code == 200
    assert response.headers["content-type"] == "image/jpeg"
    assert response.headers["cache-control"].startswith("private, max-age=")
    image = cv2.imdecode(np.frombuffer(response.content, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None and image.shape == (SIZE[1], SIZE[0], 3)


def test_snapshot_is_404_without_one_and_422_for_a_malformed_id(app: tuple[TestClient, FakeServer]) -> None:
    http, server = app
    cross(server, 1)  # no picture held: the crossing has no snapshot
    (crossing,) = history(http, type="line.cross")["events"]
    (online,) = history(http, camera="quiet")["events"]  # an event without a box

    for event_id in (crossing["id"], online["id"], "0" * 32):
        response = http.get(f"/api/events/{event_id}/snapshot.jpg")
        assert response.status_code == 404, response.text
        assert event_id in response.json()["detail"]
    response = http.get("/api/events/not-an-id/snapshot.jpg")
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["path", "event_id"]
    assert server.snapshots.stats().missed == 1
