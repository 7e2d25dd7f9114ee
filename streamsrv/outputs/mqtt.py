"""``MqttOutput``: events published to an MQTT broker with paho-mqtt.

Each event goes to ``<prefix>/<camera>/<type>`` as its JSON at the configured QoS; camera state goes to
``<prefix>/<camera>/state`` (``online``/``offline``, retained) and the server's own availability to
``<prefix>/status`` (``online``, and ``offline`` as the last will); Home Assistant discovery (``homeassistant``)
when asked for. paho's network thread reconnects with a
capped back-off; QoS 1 and 2 messages published meanwhile wait in its queue (bounded by ``max_queued``: beyond it
they are dropped and counted) and go out after the reconnect.

Example:
    >>> out = MqttOutput(MqttConfig(url="mqtt://127.0.0.1:1883"))  # doctest: +SKIP
    >>> out.start(); out.offer(event)  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
from typing import Any
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from streamsrv.config.models import redact_url
from streamsrv.config.outputs import MqttConfig
from streamsrv.events.model import Event
from streamsrv.outputs.homeassistant import Counts, HomeAssistantPublisher
from streamsrv.outputs.status import OutputStatus

log = logging.getLogger(__name__)

_STATE_OF = {"camera.online": "online", "camera.offline": "offline"}


def event_topic(prefix: str, event: Event) -> str:
    """Where an event is published.

    >>> from streamsrv.events.model import EventSequencer
    >>> event_topic("site1", EventSequencer("door", run_id="r").make("camera.online", ts=0.0))
    'site1/door/camera.online'
    """
    return f"{prefix}/{event.camera_id}/{event.type}"


class MqttOutput:
    """The ``outputs.mqtt`` publisher; ``offer`` is thread-safe and never blocks on the network."""

    name = "mqtt"

    def __init__(self, cfg: MqttConfig, counts: Counts | None = None) -> None:
        """``counts`` reads the rule engines' counts, for Home Assistant discovery (when the config asks for it)."""
        self.cfg = cfg
        parts = urlsplit(cfg.url)
        self._host = parts.hostname or ""
        tls = parts.scheme.lower() == "mqtts"
        self._port = parts.port or (8883 if tls else 1883)
        self._lock = threading.Lock()
        self._offered = self._acked = self._dropped = 0
        self._connected = False
        self._last_error: str | None = None
        client_id = cfg.client_id or f"streamsrv-{socket.gethostname()}"
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
        if tls:
            self._client.tls_set(cert_reqs=ssl.CERT_REQUIRED)
        if cfg.username is not None:
            password = cfg.password.get_secret_value() if cfg.password is not None else None
            self._client.username_pw_set(cfg.username, password)
        self._client.max_queued_messages_set(cfg.max_queued)
        self._client.reconnect_delay_set(min_delay=1, max_delay=max(1, int(cfg.reconnect_max_s)))
        self._client.will_set(f"{cfg.topic_prefix}/status", "offline", qos=1, retain=True)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_publish = self._on_publish
        self.homeassistant = (
            HomeAssistantPublisher(
                cfg.topic_prefix,
                cfg.discovery_prefix,
                counts,
                lambda topic, payload: self._publish(topic, payload, 1, retain=True),
                cfg.counts_interval_s,
            )
            if cfg.homeassistant_discovery and counts is not None
            else None
        )

    def start(self) -> None:
        """Connect in the background: a broker that is down now is retried, not an error."""
        self._client.connect_async(self._host, self._port, keepalive=30)
        self._client.loop_start()
        if self.homeassistant is not None:
            self.homeassistant.start()

    def stop(self) -> None:
        if self.homeassistant is not None:
            self.homeassistant.stop()
        if self._connected:
            self._publish(f"{self.cfg.topic_prefix}/status", "offline", 1, retain=True)
        self._client.disconnect()
        self._client.loop_stop()

    def offer(self, event: Event) -> None:
        self._publish(event_topic(self.cfg.topic_prefix, event), event.to_json(), self.cfg.qos, retain=False)
        state = _STATE_OF.get(event.type)
        if state is not None and self.cfg.retain_state:
            self._publish(f"{self.cfg.topic_prefix}/{event.camera_id}/state", state, 1, retain=True)

    def status(self) -> OutputStatus:
        with self._lock:
            pending = max(0, self._offered - self._acked - self._dropped)
            return OutputStatus(
                self.name,
                "mqtt",
                redact_url(self.cfg.url),
                self._acked,
                0,
                pending,
                0,
                self._dropped,
                self._connected,
                self._last_error,
            )

    def _publish(self, topic: str, payload: str, qos: int, retain: bool) -> None:
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        with self._lock:
            self._offered += 1
            # QoS 0 is not queued while disconnected; any QoS is refused once the queue is full.
            lost = info.rc == MQTTErrorCode.MQTT_ERR_QUEUE_SIZE or (
                qos == 0 and info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS
            )
            if lost:
                self._dropped += 1
        if lost:
            log.warning("mqtt: dropped a message to %s (%s)", topic, mqtt.error_string(info.rc))

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            with self._lock:
                self._last_error = f"connect refused: {reason}"
            log.warning("mqtt: %s refused the connection: %s", redact_url(self.cfg.url), reason)
            return
        with self._lock:
            self._connected = True
        log.info("mqtt: connected to %s", redact_url(self.cfg.url))
        if self.homeassistant is not None:
            self.homeassistant.reannounce()  # a broker without persistence lost the retained discovery messages
        self._publish(f"{self.cfg.topic_prefix}/status", "online", 1, retain=True)

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        with self._lock:
            self._connected = False
            if reason.is_failure:
                self._last_error = f"disconnected: {reason}"
        log.warning("mqtt: disconnected from %s (%s); reconnecting", redact_url(self.cfg.url), reason)

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: Any, properties: Any) -> None:
        # paho calls this on PUBACK (QoS 1), PUBCOMP (QoS 2), or once sent (QoS 0).
        with self._lock:
            self._acked += 1
