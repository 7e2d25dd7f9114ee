"""Which cameras' newest frames go into the next forward pass, and whether to wait for more.

The policy never waits for a slow camera: a batch waits at most ``max_wait_s`` after its oldest
frame arrived, and the oldest frames go first so no camera starves when more are ready than
``max_batch``.

>>> p = BatchPolicy(max_batch=2, max_wait_s=0.01)
>>> ready = [Candidate("a", 1, mono_ts=5.0), Candidate("b", 7, mono_ts=4.0), Candidate("c", 3, mono_ts=6.0)]
>>> [c.camera_id for c in p.choose(ready)]
['b', 'a']
>>> round(p.wait_s(ready[:1], cameras=3, now=5.0), 6)
0.01
>>> p.wait_s(ready[:2], cameras=3, now=5.0)
0.0
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Candidate:
    """A camera with a frame newer than the last one inferred."""

    camera_id: str
    seq: int
    mono_ts: float


@dataclass(frozen=True, slots=True)
class BatchPolicy:
    max_batch: int
    max_wait_s: float

    def choose(self, ready: list[Candidate]) -> list[Candidate]:
        return sorted(ready, key=lambda c: c.mono_ts)[: self.max_batch]

    def wait_s(self, ready: list[Candidate], cameras: int, now: float) -> float:
        """How much longer to wait for more frames before running (0: run now)."""
        if not ready or len(ready) >= min(self.max_batch, cameras):
            return 0.0
        oldest = min(c.mono_ts for c in ready)
        return max(0.0, oldest + self.max_wait_s - now)
