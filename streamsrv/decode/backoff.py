"""Exponential back-off with jitter, capped: the delay before each reconnect attempt.

>>> import random
>>> b = Backoff(ReconnectConfig(initial_s=1, max_s=8, jitter=0), rng=random.Random(0))
>>> [b.next_delay() for _ in range(5)]
[1.0, 2.0, 4.0, 8.0, 8.0]
"""

from __future__ import annotations

import random

from streamsrv.config.models import ReconnectConfig


class Backoff:
    def __init__(self, cfg: ReconnectConfig, rng: random.Random | None = None) -> None:
        self.cfg = cfg
        self._rng = rng or random.Random()
        self.failures = 0

    def next_delay(self) -> float:
        """Delay for the next attempt; jitter spreads reconnect storms when many cameras drop at once."""
        base = min(self.cfg.max_s, self.cfg.initial_s * self.cfg.multiplier**self.failures)
        self.failures += 1
        return max(0.0, base * (1 + self._rng.uniform(-self.cfg.jitter, self.cfg.jitter)))

    def reset(self) -> None:
        self.failures = 0
