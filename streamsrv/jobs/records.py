"""The records of a clip's analysis, as ``streamsrv analyze`` writes them and the jobs API returns them.

One frame record per result, each followed by the events the rule engine raised on it, and a summary with counts
at the end; one JSON line each.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from streamsrv.rules import RuleEngine
from streamsrv.types import FrameResult

if TYPE_CHECKING:
    from streamsrv.decode.motion import MotionGate


def build_records(
    results: Iterable[FrameResult],
    engine: RuleEngine,
    video: str,
    gate: Callable[[], MotionGate | None] = lambda: None,
) -> Iterator[dict[str, Any]]:
    """The frame, event and summary records of ``streamsrv analyze``: one frame record per result, each followed
    by the events ``engine`` raised on it, and a summary with counts at the end. Records name the engine's camera.
    ``gate`` gives the run's motion gate once the results are done: its handed and skipped_no_motion counts."""
    frames = 0
    by_type: Counter[str] = Counter()
    output = engine.output()
    for result in results:
        frames += 1
        yield {"type": "frame", **result.to_dict(), "camera_id": engine.camera_id}
        output = engine.process(result)
        for event in output.events:
            by_type[event.type] += 1
            yield {"type": "event", "event": json.loads(event.to_json())}
    yield {
        "type": "summary",
        "camera_id": engine.camera_id,
        "video": video,
        "frames": frames,
        "events": dict(by_type),
        "line_counts": output.line_counts,
        "occupancy": output.occupancy,
        **_gating(gate()),
    }


def _gating(gate: MotionGate | None) -> dict[str, Any]:
    if gate is None:
        return {}
    return {
        "motion_gating": gate.detector is not None,
        "handed": gate.handed,
        "skipped_no_motion": gate.skipped_no_motion,
    }


def jsonl_line(record: dict[str, Any]) -> str:
    """One record as a line of ``streamsrv analyze`` output.

    >>> jsonl_line({"type": "summary", "frames": 2})
    '{"type":"summary","frames":2}\\n'
    """
    return json.dumps(record, separators=(",", ":")) + "\n"
