"""Events: the versioned wire model, buses that deliver it (in-process, Redis), and snapshot storage."""

from streamsrv.errors import EventBusUnavailable
from streamsrv.events.async_listen import listen
from streamsrv.events.factory import create_bus
from streamsrv.events.inprocess_bus import InProcessBus
from streamsrv.events.model import SCHEMA_VERSION, Event, EventSequencer, event_json_schema
from streamsrv.events.protocol import BusStats, EventBus, EventRecord, Subscription
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
    "Subscription",
    "create_bus",
    "event_json_schema",
    "listen",
]
