"""Outputs end to end: ``streamsrv serve`` with a file camera, the real model and a tripwire delivers its events to a
signed webhook (secret from the environment, never shown) and to a Mosquitto broker, with Home Assistant discovery
and the line's count."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.support.app_server import AppServers, model_section
from tests.support.mqtt_subscriber import Subscriber
from tests.support.processes import MosquittoBroker
from tests.support.waiting import wait_for
from tests.support.webhook_receiver import WebhookReceiver

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("mosquitto") is None, reason="needs Debian's mosquitto"),
]
SECRET = "e2e-hook-secret-93"


def test_tripwire_events_reach_the_webhook_and_mqtt(
    app_factory: AppServers, person_model: Path, clip_360p: Path, tmp_path: Path
) -> None:
    receiver = WebhookReceiver(secret=SECRET.encode())
    receiver.start()
    broker = MosquittoBroker(tmp_path / "mosquitto")
    broker.start()
    subscriber = Subscriber(broker, "#")
    try:
        app = app_factory(
            model_section(person_model)
            + "outputs:\n"
            + f"  webhooks: [{{url: '{receiver.url}', secret: '${{HOOK_SECRET}}', types: [line.cross]}}]\n"
            + f"  spool_dir: {tmp_path / 'outbox'}\n"
            + f"  mqtt: {{url: '{broker.url}', topic_prefix: e2e,\n"
            + "         homeassistant_discovery: true, counts_interval_s: 1}\n"
            + "cameras:\n"
            + f"  - {{id: concourse, url: '{clip_360p}', loop: true, detect_fps: 5,\n"
            + "      rules: {lines: [{name: midline, points: [[0, 0.55], [1, 0.55]], units: norm,\n"
            + "                       left_to_right: down, right_to_left: up}]}}\n",
            env={"HOOK_SECRET": SECRET},
        )
        wait_for(lambda: len(receiver.ids()) >= 2, 240, "two line.cross events at the webhook", app)
        assert all(d.signed and d.event["type"] == "line.cross" for d in receiver.accepted)
        wait_for(lambda: len(subscriber.event_ids("e2e/concourse/line.cross")) >= 2, 30, "line.cross over MQTT", app)
        assert [m.payload for m in subscriber.on("e2e/concourse/state")] == [b"online"]

        def counted() -> int:
            values = subscriber.on("e2e/concourse/line/midline")
            return int(json.loads(values[-1].payload)["total"]) if values else 0

        wait_for(lambda: counted() >= 2, 30, "the line count for Home Assistant", app)
        assert subscriber.on("homeassistant/sensor/streamsrv_concourse_crossings_midline/config")
        with app.client() as http:
            outputs = http.get("/api/outputs").json()
            metrics = http.get("/metrics").text
        assert [o["kind"] for o in outputs] == ["webhook", "mqtt"]
        assert outputs[0]["delivered"] >= 2 and outputs[1]["connected"] is True
        assert "streamsrv_output_delivered_total" in metrics
        assert SECRET not in json.dumps(outputs) + metrics + app.log()
    finally:
        subscriber.close()
        broker.stop()
        receiver.stop()
