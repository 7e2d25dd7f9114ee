"""The bus the config asks for."""

from __future__ import annotations

from streamsrv.config.models import EventsConfig
from streamsrv.events.inprocess_bus import InProcessBus
from streamsrv.events.protocol import EventBus
from streamsrv.events.redis_bus import RedisBus


def create_bus(cfg: EventsConfig) -> EventBus:
    """Redis when ``redis_url`` is set, else in-process.

    >>> type(create_bus(EventsConfig())).__name__
    'InProcessBus'
    """
    if cfg.redis_url:
        return RedisBus(cfg.redis_url, stream_maxlen=cfg.stream_maxlen, buffer_max_events=cfg.buffer_max_events)
    return InProcessBus(history_size=cfg.history_size)
