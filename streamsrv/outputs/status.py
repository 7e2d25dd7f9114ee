"""What an output reports about itself: the API's ``GET /api/outputs`` and the metrics read this."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class OutputStatus:
    """Counts since the server started (``delivered``, ``failed`` attempts, ``dropped``) and now (``pending``,
    ``dead``); ``target`` has its credentials masked; ``connected`` is None where there is no connection."""

    name: str
    kind: str
    target: str
    delivered: int
    failed: int
    pending: int
    dead: int
    dropped: int
    connected: bool | None
    last_error: str | None
