"""Webhooks against a real HTTP receiver: signed, in order per camera, nothing lost to failures, outages or a
restart of the outputs (spool file and Redis outbox), dead letters and their redrive through the API."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from streamsrv.config.models import AppConfig
from streamsrv.config.outputs import OutputsConfig
from streamsrv.events import Event, EventSequencer, InProcessBus
from streamsrv.outputs import OutputManager
from tests.support.fake_server import serve_in_process
from tests.support.processes import RedisServer
from tests.support.waiting import wait_for
from tests.support.webhook_receiver import WebhookReceiver

SECRET = b"hook-secret-7"


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    rx = WebhookReceiver(secret=SECRET)
    rx.start()
    yield rx
    rx.stop()


def outputs_config(url: str, spool_dir: Path, **hook: object) -> OutputsConfig:
    fast = {"backoff_initial_s": 0.05, "backoff_max_s": 0.3, "timeout_s": 2.0, "max_retries": 1000}
    return OutputsConfig.model_validate(
        {"webhooks": [{"url": url, "secret": SECRET.decode(), **fast, **hook}], "spool_dir": str(spool_dir)}
    )


def crossings(camera_id: str, n: int) -> list[Event]:
    seqr = EventSequencer(camera_id, run_id="r1")
    return [
        seqr.make("line.cross", ts=1700000000.0 + i, track_id=i, label="person", confidence=0.9,
                  bbox=(1, 2, 3, 4), line="gate", direction="in")
        for i in range(n)
    ]  # fmt: skip


def assert_exactly_once_in_order(rx: WebhookReceiver, events: list[Event]) -> None:
    ids = rx.ids()
    assert sorted(set(ids)) == sorted(e.id for e in events), "every event arrives"
    assert len(ids) == len(set(ids)), "and only once"
    for camera in {e.camera_id for e in events}:
        seqs = [d.event["seq"] for d in rx.accepted if d.event["camera_id"] == camera]
        assert seqs == sorted(seqs), f"{camera}'s events in order"
    assert all(d.signed for d in rx.accepted), "every signature verifies"


@pytest.mark.parametrize("outbox", ["spool", "redis"])
def test_outage_and_restart_lose_nothing(
    receiver: WebhookReceiver, redis_server: RedisServer, tmp_path: Path, outbox: str
) -> None:
    redis_url = redis_server.url if outbox == "redis" else None
    cfg = outputs_config(receiver.url, tmp_path / "spool")
    door, yard = crossings("door", 30), crossings("yard", 30)
    bus = InProcessBus()
    manager = OutputManager(cfg, bus, redis_url)
    manager.start()
    receiver.fail_next = 5  # the first requests fail: retried with back-off
    for a, b in zip(door[:10], yard[:10], strict=True):
        bus.publish(a)
        bus.publish(b)
    wait_for(lambda: len(receiver.ids()) == 20, 15, "the first 20 events")
    assert receiver.refused >= 5

    receiver.stop()  # the receiver goes away ...
    for a, b in zip(door[10:20], yard[10:20], strict=True):
        bus.publish(a)
        bus.publish(b)
    wait_for(lambda: manager.status()[0].failed > 5 and manager.status()[0].pending == 20, 10, "failing deliveries")
    manager.stop()  # ... and the server restarts meanwhile: the outbox keeps what is pending

    bus = InProcessBus()
    manager = OutputManager(cfg, bus, redis_url)
    manager.start()
    wait_for(lambda: manager.status()[0].pending == 20, 5, "the outbox read back")
    for a, b in zip(door[20:], yard[20:], strict=True):
        bus.publish(a)
        bus.publish(b)
    receiver.start()  # ... and comes back
    try:
        wait_for(lambda: len(receiver.ids()) == 60, 20, "every event after the outage")
        wait_for(lambda: manager.status()[0].pending == 0, 5, "an empty outbox")
    finally:
        manager.stop()
    assert_exactly_once_in_order(receiver, door + yard)
    status = manager.status()[0]
    assert (status.delivered, status.dead) == (40, 0)


def test_redis_down_at_start_delays_delivery_and_keeps_order(receiver: WebhookReceiver, tmp_path: Path) -> None:
    redis_server = RedisServer()  # not started yet: the server must start anyway
    bus = InProcessBus()
    manager = OutputManager(outputs_config(receiver.url, tmp_path), bus, redis_server.url)
    manager.start()
    try:
        wait_for(lambda: (manager.status()[0].last_error or "").startswith("outbox:"), 10, "the outbox error")
        redis_server.start()
        events = crossings("door", 10)
        for event in events:
            bus.publish(event)
        wait_for(lambda: len(receiver.ids()) == 10, 40, "every event once Redis is up")
    finally:
        manager.stop()
        redis_server.stop()
    assert_exactly_once_in_order(receiver, events)


def test_a_failing_camera_blocks_only_itself_and_dead_letters_redrive(
    receiver: WebhookReceiver, tmp_path: Path
) -> None:
    cfg = AppConfig.model_validate(
        {
            "cameras": [{"id": "door", "url": "rtsp://cam/1"}, {"id": "yard", "url": "rtsp://cam/2"}],
            "outputs": outputs_config(receiver.url, tmp_path, max_retries=2, types=["line.cross"]).model_dump(
                mode="json"
            ),
        }
    )
    cfg.outputs.webhooks[0].secret = SECRET.decode()  # type: ignore[assignment]
    door, yard = crossings("door", 3), crossings("yard", 3)
    receiver.failing_cameras = {"door"}
    with serve_in_process(cfg) as (client, server):
        for a, b in zip(door, yard, strict=True):
            server.bus.publish(a)
            server.bus.publish(b)
        wait_for(lambda: client.get("/api/outputs").json()[0]["dead"] == 3, 15, "door's events dead")
        assert receiver.ids() == [e.id for e in yard], "yard is delivered while door fails"
        status = client.get("/api/outputs").json()[0]
        assert status["failed"] == 9 and status["pending"] == 0 and status["last_error"] == "HTTP 503"
        dead = client.get("/api/outputs/webhooks/0/dead").json()
        assert [d["event_id"] for d in dead] == [e.id for e in door]
        assert dead[0]["event"]["line"] == "gate" and dead[0]["error"] == "HTTP 503"
        metrics = client.get("/metrics").text
        assert 'streamsrv_output_dead{kind="webhook",output="webhook-0-' in metrics

        receiver.failing_cameras.clear()
        assert client.post("/api/outputs/webhooks/0/redrive", json={"event_ids": [door[0].id]}).json() == {
            "redriven": 1
        }
        wait_for(lambda: door[0].id in receiver.ids(), 10, "the redriven event")
        assert client.post("/api/outputs/webhooks/0/redrive").json() == {"redriven": 2}
        wait_for(lambda: len(receiver.ids()) == 6, 10, "every event")
        assert client.get("/api/outputs/webhooks/0/dead").json() == []
        assert client.get("/api/outputs/webhooks/1/dead").status_code == 404
    assert_exactly_once_in_order(receiver, door + yard)


def test_credentials_are_masked(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cfg = AppConfig.model_validate(
        {
            "outputs": {
                "webhooks": [
                    {"url": "http://user:pa55word@127.0.0.1:9/hook", "secret": "s3cret-key", "backoff_initial_s": 0.05}
                ],
                "spool_dir": str(tmp_path),
            }
        }
    )
    caplog.set_level(logging.DEBUG)
    with serve_in_process(cfg) as (client, server):
        server.bus.publish(crossings("door", 1)[0])  # port 9 refuses: the failure is logged and shown
        wait_for(lambda: client.get("/api/outputs").json()[0]["failed"] >= 2, 10, "failed attempts")
        text = (
            client.get("/api/outputs").text
            + client.get("/metrics").text
            + client.get("/api/outputs/webhooks/0/dead").text
        )
    assert "pa55word" not in text + caplog.text and "s3cret-key" not in text + caplog.text
    assert "user:***@127.0.0.1" in text and "ConnectError" in caplog.text


def test_a_slow_camera_does_not_hold_up_the_others(receiver: WebhookReceiver, tmp_path: Path) -> None:
    receiver.slow_cameras = {"door": 2.0}  # the receiver takes 2 s over each of door's events
    door, yard = crossings("door", 3), crossings("yard", 20)
    bus = InProcessBus()
    # slow, not failing: well within timeout_s (a POST that times out is sent again, and arrives twice)
    manager = OutputManager(outputs_config(receiver.url, tmp_path, timeout_s=10.0), bus)
    manager.start()
    try:
        for i, event in enumerate(yard):
            if i < len(door):
                bus.publish(door[i])
            bus.publish(event)
        wait_for(lambda: len(receiver.ids()) == 23, 30, "every event")
    finally:
        manager.stop()
    assert_exactly_once_in_order(receiver, door + yard)
    cameras = [d.event["camera_id"] for d in receiver.accepted]
    # Serially, yard's later events would wait behind each of door's slow ones; beside them, yard is done while
    # door's first answer is still coming.
    assert cameras.index("door") > cameras.index("yard") and cameras[-2:] == ["door", "door"], cameras
    assert set(cameras[: cameras.index("door")]) == {"yard"} and cameras.count("yard") == 20
