"""Events end to end through a real redis-server: the real StreamServer (the 360p clip as a looping file camera,
the real person model, a tripwire) publishes to Redis; pub/sub and the stream receive every event; Redis killed
and restarted mid-run loses nothing and repeats nothing (checked by (run_id, seq)) while the bus reports what it
buffered; `streamsrv events` replays and follows the stream; the HTTP API pages, resumes and refuses (503) on Redis."""

from __future__ import annotations

import contextlib
import json
import logging
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from streamsrv.api.app import create_app
from streamsrv.cli import main
from streamsrv.config.models import AppConfig
from streamsrv.events import Event
from streamsrv.events.redis_bus import RedisBus
from streamsrv.runtime.server import StreamServer
from streamsrv.types import FrameResult
from tests.support.processes import RedisServer
from tests.support.uvicorn_thread import serve_in_thread
from tests.support.waiting import wait_for

pytestmark = pytest.mark.slow

CAMERA = "lobby"
CHANNELS = ("streamsrv:events", f"streamsrv:events:{CAMERA}")


class StreamReader:
    """Follows the Redis stream from its start with blocking XREAD, across a Redis restart (same port)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.events: list[Event] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stream-reader", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        last = "0-0"
        while not self._stop.is_set():
            client = redis.Redis.from_url(self.url, socket_timeout=2)
            try:
                while not self._stop.is_set():
                    reply: Any = client.xread({"streamsrv:events": last}, block=200)
                    for _, entries in reply or []:
                        for entry_id, fields in entries:
                            self.events.append(Event.from_json(fields[b"event"]))
                            last = entry_id
            except (redis.ConnectionError, redis.TimeoutError):
                time.sleep(0.05)
            finally:
                client.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)


class PubSubReader:
    """Subscribed to the all-events and the camera channel; re-subscribes after a Redis restart."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.events: dict[str, list[Event]] = {channel: [] for channel in CHANNELS}
        self.subscriptions = 0  # confirmed subscribe replies, over all connections
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pubsub-reader", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            client = redis.Redis.from_url(self.url, socket_timeout=2)
            pubsub = client.pubsub()
            try:
                pubsub.subscribe(*CHANNELS)
                while not self._stop.is_set():
                    message = pubsub.get_message(timeout=0.2)
                    if message is None:
                        continue
                    if message["type"] == "subscribe":
                        self.subscriptions += 1
                    elif message["type"] == "message":
                        self.events[message["channel"].decode()].append(Event.from_json(message["data"]))
            except (redis.ConnectionError, redis.TimeoutError):
                time.sleep(0.05)
            finally:
                pubsub.close()
                client.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)


class ResultGate:
    """Holds the supervisor's results thread (after the rule engines had the frame), so no event is published
    while it is closed: the test can then kill Redis with everything delivered and read."""

    def __init__(self, server: StreamServer) -> None:
        self._open = threading.Event()
        self._open.set()
        self._parked = threading.Event()
        server.supervisor.subscribe(self._on_result)

    def _on_result(self, result: FrameResult) -> None:
        if not self._open.is_set():
            self._parked.set()
            self._open.wait()

    @contextlib.contextmanager
    def closed(self) -> Iterator[None]:
        self._parked.clear()
        self._open.clear()
        try:
            wait_for(self._parked.is_set, 30, "the results thread to park at the gate")
            yield
        finally:
            self._open.set()


def redis_config(redis_url: str, clip: Path, model: Path) -> AppConfig:
    """The 360p clip as a looping camera with a tripwire across the concourse, events through Redis."""
    return AppConfig.model_validate(
        {
            "model": {"path": str(model), "labels": {"Normal": "person", "Fall": "person"}},
            "inference": {"threads": 1, "device": "cpu", "stale_after_s": 5},
            "capacity": {"degrade": False},  # the pipeline as it is: no governor lowering detect fps
            "events": {"redis_url": redis_url},
            "cameras": [
                {
                    "id": CAMERA,
                    "url": str(clip),
                    "loop": True,
                    "detect_fps": 3,
                    "rules": {"lines": [{"name": "mid", "points": [[0, 200], [640, 200]]}]},
                }
            ],
        }
    )


def keys(events: list[Event]) -> list[tuple[str, int]]:
    return [(e.run_id, e.seq) for e in events]


def crossings(events: list[Event]) -> int:
    return sum(e.type == "line.cross" for e in events)


@pytest.fixture
def cli_logging() -> Iterator[None]:
    """The CLI installs its own stderr handler on the root logger; later tests must not write to it."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:], root.level = handlers, level


@pytest.mark.usefixtures("cli_logging")
def test_every_event_reaches_redis_once_in_order_across_a_redis_restart(
    redis_server: RedisServer,
    clip_360p: Path,
    person_model: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cfg = redis_config(redis_server.url, clip_360p, person_model)
    server = StreamServer(cfg)
    bus = server.bus
    assert isinstance(bus, RedisBus)
    gate = ResultGate(server)
    stream = StreamReader(redis_server.url)
    pubsub = PubSubReader(redis_server.url)
    try:
        wait_for(lambda: pubsub.subscriptions == len(CHANNELS), 10, "the pub/sub subscriptions")
        server.start()
        wait_for(lambda: crossings(stream.events) >= 3, 180, "three line crossings in the stream")

        with gate.closed():
            assert bus.flush(10)
            published = bus.stats().published
            wait_for(lambda: len(stream.events) == published, 10, "the stream reader to catch up")
            wait_for(lambda: all(len(e) == published for e in pubsub.events.values()), 10, "pub/sub to catch up")
            redis_server.kill()
        for channel in CHANNELS:
            assert keys(pubsub.events[channel]) == keys(stream.events), channel
        before_outage = len(stream.events)

        wait_for(lambda: bus.stats().buffered >= 2, 60, "events to be buffered while Redis is down")
        during = bus.stats()
        assert during.redis_connected is False and during.last_error is not None
        assert during.dropped == 0

        redis_server.start()
        wait_for(lambda: bus.stats().redis_connected is True, 30, "the bus to reconnect")
        at_restart = crossings(stream.events)
        wait_for(lambda: crossings(stream.events) >= at_restart + 2, 120, "crossings after the restart")

        # `streamsrv events` on the same Redis, live: the next crossing.
        config = tmp_path / "streamsrv.yaml"
        config.write_text(f"events: {{redis_url: '{redis_server.url}'}}\n")
        printed: list[int] = []
        argv = ["events", "-c", str(config), "--type", "line.cross", "--max-events", "1"]
        follower = threading.Thread(target=lambda: printed.append(main(argv)), daemon=True)
        follower.start()
        follower.join(120)
        assert printed == [0]
    finally:
        server.stop()
        pubsub.close()
    final = bus.stats()
    wait_for(lambda: len(stream.events) == final.published, 10, "the stream reader to read the last events")
    stream.close()

    # The stream, read across both Redis lives: one run, seq 1, 2, 3, ... each exactly once, in order.
    assert len({e.run_id for e in stream.events}) == 1
    assert [e.seq for e in stream.events] == list(range(1, len(stream.events) + 1))
    assert final.accepted == final.published == len(stream.events)
    assert final.dropped == 0 and final.buffered == 0 and final.reconnects == 1
    assert len(stream.events) > before_outage + during.buffered

    # Pub/sub is live only: after the restart it has what was published once it had subscribed again, no repeats.
    for channel in CHANNELS:
        after = keys(pubsub.events[channel])[before_outage:]
        assert after and after == keys(stream.events)[-len(after) :], channel

    live_line = capsys.readouterr().out.splitlines()
    assert len(live_line) == 1
    live_event = Event.from_json(live_line[0])
    assert live_event.type == "line.cross" and live_event.id in {e.id for e in stream.events}

    # ...and replaying: the newest events of the stream now in Redis, oldest first.
    assert main(["events", "-c", str(config), "--replay", "3", "--max-events", "3"]) == 0
    replayed = [Event.from_json(line) for line in capsys.readouterr().out.splitlines()]
    assert keys(replayed) == keys(stream.events)[-3:]


@contextlib.contextmanager
def serving(cfg: AppConfig) -> Iterator[httpx.Client]:
    """The app under uvicorn in a thread on a free port, and a client for it."""
    with serve_in_thread(create_app(cfg)) as url, httpx.Client(base_url=url, timeout=30) as http:
        yield http


def test_the_api_pages_and_streams_events_from_redis_and_says_when_it_is_down(
    redis_server: RedisServer, clip_360p: Path, person_model: Path
) -> None:
    with serving(redis_config(redis_server.url, clip_360p, person_model)) as http:

        def history(**params: Any) -> dict[str, Any]:
            response = http.get("/api/events", params=params)
            assert response.status_code == 200, response.text
            page: dict[str, Any] = response.json()
            return page

        wait_for(lambda: len(history(type="line.cross")["events"]) >= 3, 180, "three line crossings")
        first = history(after="0-0", limit=1)
        assert first["events"][0]["seq"] == 1
        assert re.fullmatch(r"\d+-\d+", first["cursor"])  # a Redis stream entry id
        expected = history(after=first["cursor"], limit=3)["events"]
        assert [e["seq"] for e in expected] == [2, 3, 4]

        with http.stream("GET", "/api/events/stream", headers={"Last-Event-ID": first["cursor"]}) as response:
            assert response.status_code == 200
            resumed: list[dict[str, Any]] = []
            for line in response.iter_lines():
                if line.startswith("data: "):
                    resumed.append(json.loads(line.removeprefix("data: ")))
                    if len(resumed) == 3:
                        break
        assert resumed == expected

        # Cursor-shaped, but past the largest stream id Redis has.
        response = http.get("/api/events", params={"after": "99999999999999999999-0"})
        assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["query", "after"]

        redis_server.kill()
        for path in ("/api/events", "/api/events/stream"):
            response = http.get(path)
            assert response.status_code == 503, (path, response.text)
            assert f"127.0.0.1:{redis_server.port}" in response.json()["detail"]
        redis_server.start()
        wait_for(lambda: http.get("/api/events").status_code == 200, 30, "history to be served again")
