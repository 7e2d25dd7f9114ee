"""The inference process's heap keeper hands fragmented free memory back to the OS."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap


def test_fragmented_free_memory_is_handed_back_and_counted() -> None:
    # In a fresh interpreter so the heap's history is known: free one big mmapped block (raising glibc's mmap
    # threshold, as torch's activations do), then fragment the arena with 3 MB blocks, every other one freed.
    script = textwrap.dedent(
        """
        import json
        import numpy as np
        from streamsrv.infer.heap import HeapKeeper, _rss_bytes
        big = np.ones(4_000_000 // 8); del big
        blocks = [np.ones(3_000_000 // 8) for _ in range(200)]
        for i in range(0, 200, 2):
            blocks[i] = None
        keeper = HeapKeeper(max_free_bytes=64 * 2**20, min_interval_s=10.0)
        before = _rss_bytes()
        first = keeper.tick(now=100.0)
        after = _rss_bytes()
        more = [np.ones(3_000_000 // 8) for _ in range(100)]  # fragment it again
        for i in range(0, 100, 2):
            more[i] = None
        soon = keeper.tick(now=105.0)  # within the interval: no second trim
        later = keeper.tick(now=111.0)
        print(json.dumps({"before": before, "after": after, "first": first and first.trimmed_bytes,
                          "trims": [first and first.trims, soon and soon.trims, later and later.trims],
                          "free": first and first.free_bytes, "in_use": first and first.in_use_bytes}))
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60)
    got = json.loads(out.stdout)
    assert got["before"] - got["after"] > 200 * 2**20, got  # ~300 MB free in the arena, given back
    assert got["first"] > 200 * 2**20 and got["trims"] == [1, 1, 2], got
    assert got["free"] > 64 * 2**20 and got["in_use"] > 250 * 2**20, got


def test_nothing_is_trimmed_while_little_is_free() -> None:
    from streamsrv.infer.heap import HeapKeeper

    stats = HeapKeeper(max_free_bytes=2**40).tick()
    assert stats is not None and stats.trims == 0 and stats.trimmed_bytes == 0
