"""Events: the versioned wire model, buses that deliver it (in-process, Redis), and snapshot storage."""

from streamsrv.events.bus import BusStats, EventBus, EventBusUnavailable, EventRecord, InProcessBus, create_bus, listen
from streamsrv.events.model import SCHEMA_VERSION, Event, EventSequencer, event_json_schema
from streamsrv.events.snapshots import SnapshotStore

__all__ = [
    "SCHEMA_VERSION",
    "BusStats",
    "Event",
    "EventBus",
    "EventBusUnavailable",
    "EventRecord",
    "EventSequencer",
    "InProcessBus",
    "SnapshotStore",
    "create_bus",
    "event_json_schema",
    "listen",
]
