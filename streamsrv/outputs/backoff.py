"""Retry delays: exponential, capped, with jitter so that many senders do not retry in step.

Example:
    >>> [round(retry_delay(n, 1.0, 10.0, jitter=0.0), 1) for n in (1, 2, 3, 4, 5)]
    [1.0, 2.0, 4.0, 8.0, 10.0]
"""

from __future__ import annotations

import random


def retry_delay(failures: int, initial_s: float, max_s: float, jitter: float = 0.5) -> float:
    """The delay after ``failures`` consecutive failures (>= 1): ``initial_s * 2**(failures-1)`` capped at
    ``max_s``, then shortened by a random fraction of up to ``jitter``."""
    base = min(max_s, initial_s * 2.0 ** min(failures - 1, 60))
    return base * (1.0 - jitter * random.random())
