"""Home Assistant MQTT discovery: each camera becomes a device with a connectivity sensor, a crossings sensor per
tripwire and an occupancy sensor per zone, and their values are published retained as they change.

Values come from the server's rule engines (``Counts``: camera -> its lines' and zones' counts), read every
``interval_s`` on this publisher's own thread; a line or zone added at runtime is announced when first seen.

Example:
    >>> line_state({"in": {"person": 3, "car": 1}, "out": {"person": 2}})
    {'in': 4, 'out': 2, 'total': 6}
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class CameraCounts:
    """A camera's rule counts as ``RuleOutput`` has them."""

    line_counts: Mapping[str, Mapping[str, Mapping[str, int]]]
    occupancy: Mapping[str, Mapping[str, int]]


Counts = Callable[[], Mapping[str, CameraCounts]]
Publish = Callable[[str, str], None]  # (topic, payload), retained


def object_id(*parts: str) -> str:
    """A Home Assistant object id (and topic level) from names that may hold any character.

    >>> object_id("gate.cam", "north door")
    'gate_cam_north_door'
    """
    return "_".join(re.sub(r"[^A-Za-z0-9_-]", "_", p) for p in parts)


def line_state(counts: Mapping[str, Mapping[str, int]]) -> dict[str, int]:
    """Crossings per direction (all labels) and their total."""
    state = {direction: sum(by_label.values()) for direction, by_label in counts.items()}
    return {**state, "total": sum(state.values())}


def zone_state(occupancy: Mapping[str, int]) -> dict[str, int]:
    """Objects inside per label and their total."""
    return {**occupancy, "total": sum(occupancy.values())}


class HomeAssistantPublisher:
    """Announces and updates the sensors of every camera ``counts`` reports, through ``publish``."""

    def __init__(
        self, prefix: str, discovery_prefix: str, counts: Counts, publish: Publish, interval_s: float = 5.0
    ) -> None:
        self.prefix = prefix
        self.discovery_prefix = discovery_prefix
        self._counts = counts
        self._publish = publish
        self._interval_s = interval_s
        self._announced: set[str] = set()
        self._last: dict[str, str] = {}  # state topic -> payload last published
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="homeassistant", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5.0)

    def reannounce(self) -> None:
        """Publish discovery and values again on the next round (after a reconnect: the broker may have lost them)."""
        self._announced.clear()
        self._last.clear()

    def publish_once(self) -> None:
        for camera, counts in self._counts().items():
            self._sensor(camera, "camera", "connectivity", f"{self.prefix}/{camera}/state", None)
            for line, by_direction in counts.line_counts.items():
                topic = f"{self.prefix}/{camera}/line/{object_id(line)}"
                self._sensor(camera, line, "crossings", topic, line_state(by_direction))
            for zone, by_label in counts.occupancy.items():
                topic = f"{self.prefix}/{camera}/zone/{object_id(zone)}"
                self._sensor(camera, zone, "occupancy", topic, zone_state(by_label))

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            try:
                self.publish_once()
            except Exception:
                log.exception("home assistant: publishing counts failed")

    def _sensor(self, camera: str, name: str, kind: str, topic: str, state: dict[str, int] | None) -> None:
        uid = object_id("streamsrv", camera, kind, name)
        if uid not in self._announced:
            component, config = self._config(camera, name, kind, topic, uid)
            self._publish(f"{self.discovery_prefix}/{component}/{uid}/config", json.dumps(config))
            self._announced.add(uid)
        if state is not None:
            payload = json.dumps(state, sort_keys=True)
            if self._last.get(topic) != payload:
                self._publish(topic, payload)
                self._last[topic] = payload

    def _config(self, camera: str, name: str, kind: str, topic: str, uid: str) -> tuple[str, dict[str, Any]]:
        common: dict[str, Any] = {
            "unique_id": uid,
            "object_id": uid,
            "state_topic": topic,
            "availability_topic": f"{self.prefix}/status",
            "device": {"identifiers": [object_id("streamsrv", camera)], "name": camera, "manufacturer": "streamsrv"},
        }
        if kind == "connectivity":
            return "binary_sensor", {
                **common,
                "name": "Camera",
                "device_class": "connectivity",
                "payload_on": "online",
                "payload_off": "offline",
            }
        values = {"value_template": "{{ value_json.total }}", "json_attributes_topic": topic}
        if kind == "crossings":
            return "sensor", {**common, **values, "name": f"{name} crossings", "state_class": "total_increasing"}
        return "sensor", {**common, **values, "name": f"{name} occupancy", "state_class": "measurement"}
