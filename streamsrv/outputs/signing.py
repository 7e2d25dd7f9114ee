"""Webhook signatures: HMAC-SHA256 over ``<timestamp>.<raw body>``, sent as ``X-Streamsrv-Signature: sha256=<hex>``
with the timestamp in ``X-Streamsrv-Timestamp`` (Unix seconds), so a receiver can refuse stale replays.

Example:
    >>> headers = signed_headers(b"k", b'{"id": "1"}', "abc", timestamp=1700000000)
    >>> verify(b"k", b'{"id": "1"}', headers[TIMESTAMP_HEADER], headers[SIGNATURE_HEADER], now=1700000010)
    True
    >>> verify(b"k", b'{"id": "2"}', headers[TIMESTAMP_HEADER], headers[SIGNATURE_HEADER], now=1700000010)
    False
"""

from __future__ import annotations

import hashlib
import hmac
import time

SIGNATURE_HEADER = "X-Streamsrv-Signature"
TIMESTAMP_HEADER = "X-Streamsrv-Timestamp"
EVENT_ID_HEADER = "X-Streamsrv-Event-Id"
IDEMPOTENCY_HEADER = "Idempotency-Key"
ATTEMPT_HEADER = "X-Streamsrv-Attempt"


def signature(secret: bytes, timestamp: str, body: bytes) -> str:
    """``sha256=<hex>`` of HMAC-SHA256 with ``secret`` over ``<timestamp>.`` followed by the body."""
    return "sha256=" + hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def signed_headers(secret: bytes | None, body: bytes, event_id: str, timestamp: int | None = None) -> dict[str, str]:
    """The headers of one POST: content type, event id (twice: ours and the common idempotency header),
    timestamp, and the signature when there is a secret."""
    ts = str(int(time.time()) if timestamp is None else timestamp)
    headers = {"Content-Type": "application/json", EVENT_ID_HEADER: event_id, IDEMPOTENCY_HEADER: event_id}
    headers[TIMESTAMP_HEADER] = ts
    if secret is not None:
        headers[SIGNATURE_HEADER] = signature(secret, ts, body)
    return headers


def verify(
    secret: bytes, body: bytes, timestamp: str, sig: str, now: float | None = None, tolerance_s: float = 300.0
) -> bool:
    """Whether ``sig`` signs ``body`` at ``timestamp`` and the timestamp is within ``tolerance_s`` of now."""
    try:
        age = abs((time.time() if now is None else now) - int(timestamp))
    except ValueError:
        return False
    return age <= tolerance_s and hmac.compare_digest(signature(secret, timestamp, body), sig)
