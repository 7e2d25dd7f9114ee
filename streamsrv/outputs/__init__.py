"""Outputs: events delivered to webhooks (signed, from a durable outbox, in order per camera) and MQTT."""

from streamsrv.outputs.manager import OutputManager
from streamsrv.outputs.status import OutputStatus

__all__ = ["OutputManager", "OutputStatus"]
