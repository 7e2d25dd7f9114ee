"""MQTT against a real Mosquitto broker: events on the documented topics, camera state retained, and a broker
restart while the server keeps running loses nothing at QoS 1."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from streamsrv.config.outputs import OutputsConfig
from streamsrv.events import Event, EventSequencer, InProcessBus
from streamsrv.outputs import OutputManager
from streamsrv.outputs.homeassistant import CameraCounts
from tests.support.mqtt_subscriber import Subscriber
from tests.support.processes import MosquittoBroker
from tests.support.waiting import wait_for

pytestmark = pytest.mark.skipif(shutil.which("mosquitto") is None, reason="needs Debian's mosquitto")


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[MosquittoBroker]:
    server = MosquittoBroker(tmp_path / "mosquitto")
    server.start()
    yield server
    server.stop()


def crossings(n: int, start: int = 0) -> list[Event]:
    seqr = EventSequencer("door", run_id="r1")
    return [
        seqr.make("line.cross", ts=1700000000.0 + i, track_id=i, label="person", confidence=0.9,
                  bbox=(1, 2, 3, 4), line="gate", direction="in")
        for i in range(start, start + n)
    ]  # fmt: skip


def test_events_and_state_survive_a_broker_restart(broker: MosquittoBroker) -> None:
    cfg = OutputsConfig.model_validate(
        {"mqtt": {"url": broker.url, "topic_prefix": "site1", "client_id": "streamsrv-test", "reconnect_max_s": 1}}
    )
    subscriber = Subscriber(broker, "site1/#")
    bus = InProcessBus()
    manager = OutputManager(cfg, bus)
    manager.start()
    assert manager.mqtt is not None
    try:
        wait_for(lambda: manager.status()[0].connected is True, 10, "the output connected")
        online = EventSequencer("door", run_id="c1").make("camera.online", ts=1700000000.0)
        bus.publish(online)
        before = crossings(5)
        for event in before:
            bus.publish(event)
        wait_for(lambda: len(subscriber.event_ids("site1/door/line.cross")) == 5, 10, "5 events")
        assert [m.payload for m in subscriber.on("site1/door/state")] == [b"online"]
        assert subscriber.event_ids("site1/door/camera.online") == [online.id]
        assert subscriber.on("site1/door/line.cross")[0].qos == 1

        broker.stop()
        wait_for(lambda: manager.status()[0].connected is False, 10, "the output noticed")
        during = crossings(10, start=5)
        for event in during:
            bus.publish(event)  # queued by the client while the broker is away
        broker.start()
        wait_for(lambda: len(subscriber.event_ids("site1/door/line.cross")) == 15, 20, "every event after the restart")
        assert subscriber.event_ids("site1/door/line.cross") == [e.id for e in before + during], "in order"
        wait_for(lambda: manager.status()[0].pending == 0, 10, "every message acknowledged")
        status = manager.status()[0]
        assert status.connected and status.dropped == 0

        late = Subscriber(broker, "site1/+/state", client_id="late-subscriber")
        try:
            wait_for(lambda: len(late.on("site1/door/state")) == 1, 10, "the retained state")
            assert late.on("site1/door/state")[0].retain and late.on("site1/door/state")[0].payload == b"online"
        finally:
            late.close()
    finally:
        manager.stop()
        subscriber.close()


def test_messages_beyond_the_queue_bound_are_dropped_and_counted(tmp_path: Path) -> None:
    absent = MosquittoBroker(tmp_path / "absent")  # never started: its port refuses connections
    cfg = OutputsConfig.model_validate({"mqtt": {"url": f"mqtt://u:hunter2@127.0.0.1:{absent.port}", "max_queued": 3}})
    bus = InProcessBus()
    manager = OutputManager(cfg, bus)
    manager.start()
    try:
        for event in crossings(10):
            bus.publish(event)
        wait_for(lambda: manager.status()[0].dropped == 7, 5, "7 drops")
        status = manager.status()[0]
        assert (status.pending, status.connected, status.target) == (3, False, f"mqtt://u:***@127.0.0.1:{absent.port}")
    finally:
        manager.stop()


def test_home_assistant_discovery_and_counts(broker: MosquittoBroker) -> None:
    counts = {"door.1": CameraCounts({"gate": {"in": {"person": 2}, "out": {}}}, {"lobby": {"person": 1}})}
    cfg = OutputsConfig.model_validate(
        {
            "mqtt": {
                "url": broker.url,
                "topic_prefix": "site1",
                "homeassistant_discovery": True,
                "counts_interval_s": 0.1,
            }
        }
    )
    manager = OutputManager(cfg, InProcessBus(), counts=lambda: counts)
    manager.start()
    subscriber = Subscriber(broker, "#", client_id="ha")
    try:
        line_cfg = "homeassistant/sensor/streamsrv_door_1_crossings_gate/config"
        wait_for(lambda: bool(subscriber.on(line_cfg)) and bool(subscriber.on("site1/door.1/zone/lobby")), 10, "HA")
        config = json.loads(subscriber.on(line_cfg)[-1].payload)
        assert config["state_topic"] == "site1/door.1/line/gate"
        assert config["value_template"] == "{{ value_json.total }}"
        assert config["device"]["identifiers"] == ["streamsrv_door_1"]
        assert json.loads(subscriber.on("site1/door.1/line/gate")[-1].payload) == {"in": 2, "out": 0, "total": 2}
        connectivity = json.loads(
            subscriber.on("homeassistant/binary_sensor/streamsrv_door_1_connectivity_camera/config")[-1].payload
        )
        assert connectivity["state_topic"] == "site1/door.1/state"

        counts["door.1"] = CameraCounts({"gate": {"in": {"person": 3}, "out": {}}}, {"lobby": {}})
        wait_for(lambda: json.loads(subscriber.on("site1/door.1/line/gate")[-1].payload)["total"] == 3, 5, "update")
        assert json.loads(subscriber.on("site1/door.1/zone/lobby")[-1].payload) == {"total": 0}
        late = Subscriber(broker, "site1/door.1/line/#", client_id="ha-late")  # values are retained
        try:
            wait_for(lambda: bool(late.on("site1/door.1/line/gate")), 5, "the retained count")
            assert late.on("site1/door.1/line/gate")[0].retain
        finally:
            late.close()
    finally:
        manager.stop()
        subscriber.close()
