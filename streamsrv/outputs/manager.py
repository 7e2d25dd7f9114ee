"""``OutputManager``: the configured outputs, fed from the event bus, started and stopped with the server.

The bus calls subscribers on the publisher's thread (for the in-process bus, the results thread), so the
subscription only queues each event; the manager's intake thread hands it to the outputs, which store it
(a webhook's outbox append is fsync'd) and deliver it on their own threads.

Example:
    >>> manager = OutputManager(cfg.outputs, bus, redis_url=cfg.events.redis_url)  # doctest: +SKIP
    >>> manager.start(); manager.status()  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import logging
import queue
import threading
from pathlib import Path

from streamsrv.config.outputs import OutputsConfig, WebhookConfig
from streamsrv.errors import ConfigError
from streamsrv.events.model import Event
from streamsrv.events.protocol import EventBus, EventRecord, Subscription
from streamsrv.outputs.homeassistant import Counts
from streamsrv.outputs.mqtt import MqttOutput
from streamsrv.outputs.outbox import Outbox
from streamsrv.outputs.redis_outbox import RedisOutbox
from streamsrv.outputs.spool import SpoolOutbox
from streamsrv.outputs.status import OutputStatus
from streamsrv.outputs.webhook import WebhookOutput

log = logging.getLogger(__name__)


def webhook_name(index: int, cfg: WebhookConfig) -> str:
    """The outbox name of webhook ``index``: its URL's hash keeps another receiver from inheriting the outbox
    when the list is edited.

    >>> from streamsrv.config.outputs import WebhookConfig
    >>> webhook_name(0, WebhookConfig(url="http://h/x"))
    'webhook-0-86ca997402'
    """
    return f"webhook-{index}-{hashlib.sha256(cfg.url.encode()).hexdigest()[:10]}"


class OutputManager:
    """Every output of ``cfg``; webhook outboxes in Redis at ``redis_url`` when given, else under ``spool_dir``;
    ``counts`` reads the rule engines' counts for Home Assistant discovery."""

    def __init__(
        self, cfg: OutputsConfig, bus: EventBus, redis_url: str | None = None, counts: Counts | None = None
    ) -> None:
        self.cfg = cfg
        self.bus = bus
        self._redis_url = redis_url
        self.webhooks: list[WebhookOutput] = []
        self.mqtt = MqttOutput(cfg.mqtt, counts) if cfg.mqtt is not None else None
        self._queue: queue.SimpleQueue[Event | None] = queue.SimpleQueue()
        self._subscription: Subscription | None = None
        self._thread = threading.Thread(target=self._run, name="outputs-intake", daemon=True)

    @property
    def enabled(self) -> bool:
        return bool(self.cfg.webhooks) or self.mqtt is not None

    def start(self) -> None:
        """Open the outboxes (raises if one cannot be opened), start delivering, subscribe to the bus."""
        if not self.enabled:
            return
        for i, hook in enumerate(self.cfg.webhooks):
            name = webhook_name(i, hook)
            self.webhooks.append(WebhookOutput(name, hook, self._outbox(name)))
        for out in self.webhooks:
            out.start()
        if self.mqtt is not None:
            self.mqtt.start()
        self._thread.start()
        self._subscription = self.bus.subscribe(self._on_event)

    def stop(self) -> None:
        """Stop taking events, hand over those already taken, stop the outputs (pending ones stay in the outbox)."""
        if self._subscription is None:
            return
        self._subscription.close()
        self._queue.put(None)
        self._thread.join(10.0)
        for out in self.webhooks:
            out.stop()
        if self.mqtt is not None:
            self.mqtt.stop()

    def status(self) -> list[OutputStatus]:
        outs = [w.status() for w in self.webhooks]
        return [*outs, self.mqtt.status()] if self.mqtt is not None else outs

    def _outbox(self, name: str) -> Outbox:
        if self._redis_url:
            return RedisOutbox(self._redis_url, name)
        path = Path(self.cfg.spool_dir) / f"{name}.jsonl"
        try:
            return SpoolOutbox(path)
        except OSError as exc:
            raise ConfigError(f"outputs.spool_dir: cannot open the outbox {path}: {exc.strerror or exc}") from None

    def _on_event(self, record: EventRecord) -> None:
        self._queue.put(record.event)

    def _run(self) -> None:
        while (event := self._queue.get()) is not None:
            for out in self.webhooks:
                try:
                    out.offer(event)
                except Exception:
                    log.exception("webhook %s: cannot store event %s; it is not delivered", out.name, event.id)
            if self.mqtt is not None:
                self.mqtt.offer(event)
