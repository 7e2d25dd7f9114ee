"""``Subscriber``: a real MQTT subscriber for tests, with a persistent session, that reconnects by itself."""

from __future__ import annotations

import json
import threading
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from tests.support.processes import MosquittoBroker


class Subscriber:
    """A persistent-session subscriber to ``<prefix>/#`` at QoS 1 that reconnects by itself."""

    def __init__(self, broker: MosquittoBroker, topic: str, client_id: str = "test-subscriber") -> None:
        self.messages: list[mqtt.MQTTMessage] = []
        self._lock = threading.Lock()
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
        self._client.reconnect_delay_set(min_delay=1, max_delay=1)
        self._client.on_connect = lambda c, *_: c.subscribe(topic, qos=1)
        self._client.on_message = self._on_message
        self._client.connect("127.0.0.1", broker.port)
        self._client.loop_start()

    def _on_message(self, client: Any, userdata: Any, message: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append(message)

    def on(self, topic: str) -> list[mqtt.MQTTMessage]:
        with self._lock:
            return [m for m in self.messages if m.topic == topic]

    def event_ids(self, topic: str) -> list[str]:
        """Event ids in arrival order, QoS 1 repeats dropped."""
        seen: dict[str, None] = {}
        for m in self.on(topic):
            seen.setdefault(json.loads(m.payload)["id"], None)
        return list(seen)

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()
